"""``runyard completion {bash,zsh,fish}``: a shell completion script, written from the
command's own parser (cli.py), so it completes every command and option there is. It
completes experiment ids and titles with ``runyard list --quiet`` (in the ``--home`` given on
the line, if any), file names where a file is asked for, and the values of options that take
one of a few."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")
# what a positional argument (by its dest) or an option's value (by dest) is
_FILES = {"output", "snapshot"}
_DIRS = {"home"}


@dataclass
class _Option:
    names: list[str]
    help: str
    values: str | None = None  # None: a flag; "file", "dir", "any", or "words:a b c"


@dataclass
class _Command:
    name: str
    help: str
    options: list[_Option] = field(default_factory=list)
    positionals: list[str] = field(default_factory=list)  # "experiment", "file", "any", "words:..."


def _values(action: argparse.Action) -> str | None:
    if action.nargs == 0:
        return None
    if action.choices is not None:
        return "words:" + " ".join(str(c) for c in action.choices)
    if action.dest in _FILES:
        return "file"
    if action.dest in _DIRS:
        return "dir"
    if action.dest == "experiment":
        return "experiment"
    return "any"


def _options(parser: argparse.ArgumentParser) -> list[_Option]:
    return [
        _Option(list(a.option_strings), a.help if isinstance(a.help, str) else "", _values(a))
        for a in parser._actions
        if a.option_strings and a.help != argparse.SUPPRESS
    ]


def _commands(parser: argparse.ArgumentParser) -> list[_Command]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help if isinstance(a.help, str) else "" for a in sub._choices_actions}
    out = []
    for name, sp in sub.choices.items():
        command = _Command(name, helps.get(name, ""), _options(sp))
        command.options.append(_Option(["--home"], "runyard home", "dir"))
        command.positionals = [_values(a) or "any" for a in sp._actions if not a.option_strings]
        out.append(command)
    return out


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell``."""
    if shell == "fish":
        return _fish(parser)
    text = _bash(parser)
    if shell == "zsh":  # zsh runs bash completion functions through bashcompinit
        return (
            '# runyard completion for zsh: add to ~/.zshrc: eval "$(runyard completion zsh)"\n'
            "autoload -U +X compinit && { (( $+functions[compdef] )) || compinit; }\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + text
        )
    return '# runyard completion for bash: add to ~/.bashrc: eval "$(runyard completion bash)"\n' + text


def _case_words(items: dict[str, str]) -> str:
    return "".join(f"        {shlex.quote(k)}) {v} ;;\n" for k, v in items.items())


def _bash(parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    top = _options(parser)
    top.append(_Option(["--home"], "runyard home", "dir"))
    top_words = " ".join(n for o in top for n in o.names)
    setup: dict[str, str] = {}
    values: dict[str, str] = {}  # "command option" -> how to complete its value
    positions: dict[str, str] = {}  # "command n" -> how to complete its positional argument n
    for c in commands:
        flags = " ".join(n for o in c.options for n in o.names)
        takes = " ".join(n for o in c.options if o.values for n in o.names)
        setup[c.name] = f"opts={shlex.quote(flags)}; takes={shlex.quote(' ' + takes + ' ')}"
        for i, kind in enumerate(c.positionals):
            if kind != "any":
                positions[f"{c.name} {i}"] = _bash_value(kind)
        for o in c.options:
            for n in o.names:
                if o.values:
                    values[f"{c.name} {n}"] = _bash_value(o.values)
    return f"""_runyard_experiments() {{
    local home=() i ids id
    for ((i = 1; i < ${{#COMP_WORDS[@]}}; i++)); do
        if [[ ${{COMP_WORDS[i]}} == --home ]]; then
            home=(--home "${{COMP_WORDS[i+1]}}")
            [[ ${{COMP_WORDS[i+1]}} == = ]] && home=(--home "${{COMP_WORDS[i+2]}}")
        fi
    done
    ids=$(command runyard "${{home[@]}}" list --quiet 2>/dev/null) || return 0
    while IFS= read -r id; do
        [[ -n $id ]] && printf '%s\\n%s\\n' "$id" "${{id#*_}}"
    done <<< "$ids" | sort -u
}}

_runyard_value() {{
    case "$1 $2" in
{_case_words(values)}        *) ;;
    esac
}}

_runyard_position() {{
    case "$1 $2" in
{_case_words(positions)}        *) ;;
    esac
}}

_runyard() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} w i
    local cmd='' at=0 opts='' takes='' n=0 skip=0
    COMPREPLY=()
    [[ $prev == = ]] && prev=${{COMP_WORDS[COMP_CWORD-2]}}  # --opt=value: bash splits at '='
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        if [[ $w == --home ]]; then ((i++)); [[ ${{COMP_WORDS[i]}} == = ]] && ((i++)); continue; fi
        if [[ $w != -* ]]; then cmd=$w; at=$i; break; fi
    done
    if [[ -z $cmd ]]; then
        if [[ $prev == --home ]]; then COMPREPLY=($(compgen -d -- "$cur")); return 0; fi
        if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W {shlex.quote(top_words)} -- "$cur"));
        else COMPREPLY=($(compgen -W {shlex.quote(" ".join(c.name for c in commands))} -- "$cur")); fi
        return 0
    fi
    case $cmd in
{_case_words(setup)}        *) return 0 ;;
    esac
    if [[ $takes == *" $prev "* ]]; then _runyard_value "$cmd" "$prev"; return 0; fi
    for ((i = at + 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        if ((skip)); then skip=0; [[ $w == = ]] && skip=1; continue; fi
        if [[ $takes == *" $w "* ]]; then skip=1; continue; fi
        [[ $w == -* || $w == = ]] || ((n++))
    done
    if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); return 0; fi
    _runyard_position "$cmd" "$n"
    return 0
}}

complete -F _runyard runyard
"""


def _bash_value(kind: str) -> str:
    if kind == "file":
        return 'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur"))'
    if kind == "dir":
        return 'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur"))'
    if kind == "experiment":
        return 'COMPREPLY=($(compgen -W "$(_runyard_experiments)" -- "$cur"))'
    if kind.startswith("words:"):
        return f'COMPREPLY=($(compgen -W {shlex.quote(kind[6:])} -- "$cur"))'
    return ":"


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(o: _Option, condition: str) -> str:
    parts = ["complete -c runyard", f"-n {_fish_quote(condition)}"]
    for n in o.names:
        parts.append(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}")
    if o.values == "file":
        parts.append("-r -F")
    elif o.values == "dir":
        parts.append("-x -a '(__fish_complete_directories)'")
    elif o.values and o.values.startswith("words:"):
        parts.append(f"-x -a {_fish_quote(o.values[6:])}")
    elif o.values:
        parts.append("-x")
    if o.help:
        parts.append(f"-d {_fish_quote(o.help)}")
    return " ".join(parts)


def _fish(parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    takes = sorted({n for c in commands for o in c.options if o.values for n in o.names})
    lines = [
        "# runyard completion for fish: runyard completion fish > ~/.config/fish/completions/runyard.fish",
        "function __runyard_experiments",
        "    set -l words (commandline -opc)",
        "    set -l home",
        "    for i in (seq (count $words))",
        "        if test $words[$i] = --home; and test $i -lt (count $words)",
        "            set home --home $words[(math $i + 1)]",
        "        else if string match -q -- '--home=*' $words[$i]",
        "            set home $words[$i]",
        "        end",
        "    end",
        "    for id in (command runyard $home list --quiet 2>/dev/null)",
        "        echo $id",
        "        string replace -r '^[^_]*_' '' -- $id",
        "    end",
        "end",
        "# how many arguments the command has before the one being completed",
        "function __runyard_position",
        f"    set -l takes {' '.join(takes)}",
        "    set -l words (commandline -opc)",
        "    set -l n 0",
        "    set -l seen 0",
        "    set -l skip 0",
        "    for w in $words[2..-1]",
        "        if test $skip = 1",
        "            set skip 0",
        "        else if contains -- $w $takes",
        "            set skip 1",
        "        else if not string match -q -- '-*' $w",
        "            if test $seen = 1",
        "                set n (math $n + 1)",
        "            else",
        "                set seen 1",
        "            end",
        "        end",
        "    end",
        "    test $n = $argv[1]",
        "end",
        "complete -c runyard -f",
    ]
    for o in _options(parser):
        lines.append(_fish_option(o, "__fish_use_subcommand"))
    lines.append(_fish_option(_Option(["--home"], "runyard home", "dir"), "true"))
    for c in commands:
        lines.append(f"complete -c runyard -n __fish_use_subcommand -a {c.name} -d {_fish_quote(c.help)}")
    for c in commands:
        seen = f"__fish_seen_subcommand_from {c.name}"
        for o in c.options:
            if o.names != ["--home"]:
                lines.append(_fish_option(o, seen))
        for i, kind in enumerate(c.positionals):
            condition = f"{seen}; and __runyard_position {i}"
            if kind == "experiment":
                lines.append(f"complete -c runyard -n {_fish_quote(condition)} -a '(__runyard_experiments)'")
            elif kind == "file":
                lines.append(f"complete -c runyard -n {_fish_quote(condition)} -F")
            elif kind.startswith("words:"):
                lines.append(f"complete -c runyard -n {_fish_quote(condition)} -a {_fish_quote(kind[6:])}")
    return "\n".join(lines) + "\n"
