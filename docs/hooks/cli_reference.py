"""MkDocs hook: the CLI reference in docs/cli.md, generated from the click commands.

A line ``<!-- cli-reference -->`` in a page is replaced by one section per command and
subcommand of ``maintenance-guard``, each with the command's own ``--help`` text, so the
reference cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

import click

MARKER = "<!-- cli-reference -->"
WIDTH = 88


def _sections(command: click.Command, parent: click.Context | None, path: list[str]) -> list[str]:
    name = path[-1]
    ctx = click.Context(
        command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    title = " ".join(path[1:]) or "Global options"
    level = "#" * min(max(len(path), 2), 4)
    heading = f"`{title}`" if parent is not None else title
    out = [f"{level} {heading}\n\n```text\n{command.get_help(ctx)}\n```\n"]
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            child = command.get_command(ctx, sub)
            if child is not None and not child.hidden:
                out.extend(_sections(child, ctx, [*path, sub]))
    return out


def reference() -> str:
    """The group's and every command's help, as Markdown sections (``##`` commands,
    ``###`` subcommands)."""
    from maintenance_guard.cli import main

    return "\n".join(_sections(main, None, ["maintenance-guard"]))


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
