"""``opencdp audiences`` (create, list, show, count, preview, members, evaluate, delete) and ``opencdp journeys``
(create, list, show, entries, delete)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from opencdp.cli.common import AsJson, DataDir, call, console, print_json, read_document

audiences_app = typer.Typer(no_args_is_help=True, help="Audiences without SQL: create, count, preview, members.")
DefinitionFile = Annotated[Path, typer.Argument(help="YAML or JSON: name, description, where (a condition tree).")]


def _describe(node: dict[str, Any]) -> str:
    """One line for a condition of the tree (inner nodes are shown by the tree itself)."""
    if "trait" in node:
        value = node.get("value")
        return f"{node['trait']} {node.get('op', '=')}" + ("" if value is None else f" {value!r}")
    if "event" in node or "over" in node:
        what = node.get("event") or f"any of {node['over']}"
        low, high = node.get("at_least"), node.get("at_most")
        times = f"at most {high}" if low in (None, 0) and high is not None else f"at least {low or 1}"
        if low and high is not None:
            times = f"{low} to {high}"
        window = f" in the last {node['within_days']} days" if node.get("within_days") else ""
        where = f" where {len(node['where'])} condition(s)" if node.get("where") else ""
        return f"did {what} {times} times{window}{where}"
    if "audience" in node:
        return f"in audience {node['audience']}"
    if "identity" in node:
        return f"has an identifier of type {node['identity']}"
    return next(iter(node))


def _tree(doc: dict[str, Any], counted: dict[str, Any]) -> Tree:
    counts = {b["path"]: b["count"] for b in counted["branches"]}
    root = Tree(f"[bold]{counted['name']}[/bold]: {counted['count']:,} profiles")

    def add(parent: Tree, node: dict[str, Any], path: str) -> None:
        for key in ("all", "any"):
            if key in node:
                label = "all of" if key == "all" else "any of"
                branch = parent.add(f"{label} ({counts.get(path, counted['count']):,})")
                for i, child in enumerate(node[key]):
                    add(branch, child, f"{path}.{key}[{i}]")
                return
        if "not" in node:
            add(parent.add(f"not ({counts.get(path, counted['count']):,})"), node["not"], f"{path}.not")
            return
        parent.add(f"{_describe(node)}: {counts.get(path, counted['count']):,}")

    add(root, doc["where"], "where")
    return root


@audiences_app.command("create")
def audiences_create(definition_file: DefinitionFile, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Save (or replace) an audience and evaluate it over every profile; refused with a clear error when it names
    a missing trait, event or audience, mixes types, or makes audiences depend on each other in a circle."""
    doc = read_document(definition_file, "bad_audience")
    result = call(data_dir, lambda b: b.put_audience(doc))
    if as_json:
        print_json(result)
        return
    console.print(f"audience {result['name']} saved (version {result['version']}): {result['entered']:,} entered, "
                  f"{result['exited']:,} left")  # fmt: skip


@audiences_app.command("count")
def audiences_count(definition_file: DefinitionFile, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """How many profiles a definition holds, and each branch of it, without saving it."""
    doc = read_document(definition_file, "bad_audience")
    result = call(data_dir, lambda b: b.count_audience(doc))
    if as_json:
        print_json(result)
        return
    assert isinstance(doc, dict)
    console.print(_tree(doc, result))


@audiences_app.command("preview")
def audiences_preview(
    definition_file: DefinitionFile,
    limit: Annotated[int, typer.Option(help="How many members to show.")] = 10,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """A sample of the profiles a definition holds, without saving it."""
    doc = read_document(definition_file, "bad_audience")
    _members(call(data_dir, lambda b: b.preview_audience(doc, limit)), as_json)


@audiences_app.command("members")
def audiences_members(
    name: str,
    limit: Annotated[int, typer.Option(help="How many members to show.")] = 100,
    after: Annotated[str | None, typer.Option(help="Start after this profile id (the next page).")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """A saved audience's members, by profile id."""
    _members(call(data_dir, lambda b: b.audience_members(name, limit, after)), as_json)


def _members(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    columns = ["profile_id", "email", "first_name", "last_name", "city", "country"]
    table = Table(*columns)
    for r in rows:
        table.add_row(*(str(r.get(c, "")) for c in columns))
    console.print(table)


@audiences_app.command("list")
def audiences_list(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Every saved audience with its size."""
    rows = call(data_dir, lambda b: b.audiences())
    if as_json:
        print_json(rows)
        return
    table = Table("name", "members", "version", "evaluated in full", "re-evaluated on a schedule", "description")
    for r in rows:
        table.add_row(r["name"], f"{r['members']:,}", str(r["version"]), str(r["evaluated_at"] or "")[:19],
                      "yes" if r["time_relative"] else "", r["description"])  # fmt: skip
    console.print(table)


@audiences_app.command("show")
def audiences_show(name: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """One audience: its definition, size and last evaluation."""
    result = call(data_dir, lambda b: b.audience(name))
    if as_json:
        print_json(result)
        return
    console.print(f"{name}: {result['members']:,} members, version {result['version']}, evaluated in full "
                  f"{str(result['evaluated_at'] or 'never')[:19]}. {result['description']}")  # fmt: skip
    counted = call(data_dir, lambda b: b.count_audience(result["definition"]))
    console.print(_tree(result["definition"], counted))


@audiences_app.command("evaluate")
def audiences_evaluate(
    names: Annotated[list[str] | None, typer.Argument(help="Audiences to evaluate (default: all).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Evaluate audiences over every profile now (the processor keeps them current on its own)."""
    result = call(data_dir, lambda b: b.evaluate_audiences(names or []))
    console.print(f"{result['audiences']} audience(s) evaluated: {result['entered']:,} entered, "
                  f"{result['exited']:,} left")  # fmt: skip


@audiences_app.command("delete")
def audiences_delete(name: str, data_dir: DataDir = None) -> None:
    """Remove an audience (refused while another audience uses it); its members leave it."""
    result = call(data_dir, lambda b: b.delete_audience(name))
    console.print(f"audience {result['deleted']} removed ({result['exited']:,} members left it)")


journeys_app = typer.Typer(no_args_is_help=True, help="Journeys and triggers: create, list, show, entries, delete.")


@journeys_app.command("create")
def journeys_create(
    definition_file: Annotated[Path, typer.Argument(help="YAML or JSON: name, trigger, steps, exit_on, cap.")],
    data_dir: DataDir = None,
) -> None:
    """Save (or replace) a journey; it reacts to what arrives from now on."""
    doc = read_document(definition_file, "bad_journey")
    result = call(data_dir, lambda b: b.put_journey(doc))
    console.print(f"journey {result['name']} saved (version {result['version']})")


@journeys_app.command("list")
def journeys_list(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Every journey with how many profiles are in it, done, exited, and the messages sent."""
    rows = call(data_dir, lambda b: b.journeys())
    if as_json:
        print_json(rows)
        return
    table = Table("name", "trigger", "active", "done", "exited", "sent", "description")
    for r in rows:
        trigger = r["trigger"].get("event") or f"enters {r['trigger'].get('audience')}"
        table.add_row(r["name"], str(trigger), f"{r['active']:,}", f"{r['done']:,}", f"{r['exited']:,}",
                      f"{r['sent']:,}", r["description"])  # fmt: skip
    console.print(table)


@journeys_app.command("show")
def journeys_show(name: str, data_dir: DataDir = None) -> None:
    """A journey's definition and its counts."""
    print_json(call(data_dir, lambda b: b.journey(name)))


@journeys_app.command("entries")
def journeys_entries(
    name: str,
    status: Annotated[str | None, typer.Option(help="active, done, exited or merged.")] = None,
    limit: Annotated[int, typer.Option(help="How many entries to show.")] = 20,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """A journey's entries, newest first: profile, step, when the step is due, status."""
    rows = call(data_dir, lambda b: b.journey_states(name, status, limit))
    if as_json:
        print_json(rows)
        return
    table = Table("entry", "profile_id", "step", "due", "status", "entered")
    for r in rows:
        table.add_row(str(r["entry"]), r["profile_id"], str(r["step"]), str(r["due_at"])[:19], r["status"],
                      str(r["entered_at"])[:19])  # fmt: skip
    console.print(table)


@journeys_app.command("delete")
def journeys_delete(name: str, data_dir: DataDir = None) -> None:
    """Remove a journey; profiles in it leave it."""
    result = call(data_dir, lambda b: b.delete_journey(name))
    console.print(f"journey {result['deleted']} removed ({result['ended']:,} entries ended)")
