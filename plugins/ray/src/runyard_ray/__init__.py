"""runyard-ray: run runyard tasks as Ray Jobs on a Ray cluster (``RayExecutor``)."""

from runyard_ray.executor import RayExecutor

__all__ = ["RayExecutor"]
