"""``opencdp identity``: why a profile is one person (explain) and how the identity graph is doing (health)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from opencdp.cli.common import AsJson, DataDir, call, console, print_json

identity_app = typer.Typer(
    no_args_is_help=True,
    help="The identity graph: explain a profile, split one for good, train matching, review, check its health.",
)
review_app = typer.Typer(
    help="Pairs the match model is unsure of: list them, accept or reject one (a decision that sticks).",
    invoke_without_command=True,
)
identity_app.add_typer(review_app, name="review")


@identity_app.command("explain")
def identity_explain(
    ref: Annotated[str, typer.Argument(help="A profile id, or an identifier as type:value (email:ada@example.org).")],
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Why these identifiers are one person: each edge and the message that made it, and what was refused."""
    doc = call(data_dir, lambda b: b.explain_profile(ref))
    if as_json:
        print_json(doc)
        return
    console.print(f"[bold]{doc['profile_id']}[/bold]: {len(doc['identifiers'])} identifiers")
    ids = Table("type", "value", "first seen", "messages")
    for i in doc["identifiers"]:
        ids.add_row(i["type"], i["value"], str(i["first_seen"])[:19], str(i["messages"]))
    console.print(ids)
    edges = Table("joined", "to", "because", "message", "source", title="why they are one person")
    for e in doc["edges"]:
        because = e["rule"] + (f" (p = {e['probability']:.4f})" if e.get("probability") is not None else "")
        edges.add_row(e["from"], e["to"], because, str(e["message_id"]), str(e["source_id"]))
    console.print(edges)
    if doc["refused"]:
        refused = Table("identifier", "kept apart from", "reason", "in profile", title="merges refused")
        for r in doc["refused"]:
            refused.add_row(r["identifier"], r["kept_apart_from"], r["reason"], str(r["other_profile_id"]))
        console.print(refused)
    for a in doc["absorbed"]:
        console.print(f"absorbed {a['profile_id']} at {str(a['merged_at'])[:19]}")


@identity_app.command("split")
def identity_split(
    profile: Annotated[str, typer.Argument(help="A profile id, or an identifier of it as type:value.")],
    by: Annotated[str, typer.Option(help="What to separate: an identifier (type:value) or record:KEY.")],
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Separate an identifier (and what is nearest to it) from a profile, for good: later evidence and
    reprocessing respect it until `opencdp identity unsplit` removes it."""
    doc = call(data_dir, lambda b: b.split_profile(profile, by))
    if as_json:
        print_json(doc)
        return
    console.print(f"{by} now belongs to {doc['split_off']}; the rest stays in {doc['profile_id']}")


@identity_app.command("unsplit")
def identity_unsplit(
    a: Annotated[str, typer.Argument(help="An identifier, type:value.")],
    b: Annotated[str, typer.Argument(help="The identifier it was split from, type:value.")],
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Remove a split: the two identifiers may be one profile again if the evidence joins them."""
    doc = call(data_dir, lambda backend: backend.unsplit(a, b))
    if as_json:
        print_json(doc)
        return
    console.print(f"split removed; {a} is in {doc['profile_id']}")


@identity_app.command("health")
def identity_health(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Profile sizes, the largest profiles, merges, splits, refused edges, and giant-profile alerts."""
    doc = call(data_dir, lambda b: b.identity_health())
    if as_json:
        print_json(doc)
        return
    console.print(
        f"{doc['profiles']:,} profiles from {doc['identifiers']:,} identifiers; {doc['merges']:,} merges, "
        f"{doc['splits']:,} splits, {doc['refused_edges']:,} merges refused by limits"
    )
    m = doc["matching"]
    model = f"match model v{m['model_version']}" if m["model_version"] else "no match model (opencdp identity train)"
    console.print(
        f"{model}: {m['match_records']:,} match records, {m['probabilistic_edges']:,} probabilistic edges, "
        f"{m['waiting_for_review']:,} pairs waiting for review, {m['decided_in_review']:,} decided"
    )
    sizes = Table("identifiers per profile", "profiles")
    for bucket, n in doc["size_distribution"].items():
        sizes.add_row(bucket, f"{n:,}")
    console.print(sizes)
    top = Table("largest profiles", "identifiers", "user ids", "emails", "anonymous ids")
    for t in doc["largest"]:
        top.add_row(t["profile_id"], f"{t['identifiers']:,}", str(t["user_ids"]), str(t["emails"]),
                    str(t["anonymous_ids"]))  # fmt: skip
    console.print(top)
    if doc["blocked_values_hit"]:
        hits = ", ".join(f"{b['type']} {b['value']!r} ({b['hits']:,})" for b in doc["blocked_values_hit"])
        console.print(f"placeholders sent as identifiers (ignored): {hits}")
    for alert in doc["alerts"]:
        console.print(f"[red]{alert}[/red]")


@identity_app.command("train")
def identity_train(
    merge: Annotated[float | None, typer.Option(help="Merge at or above this match probability.")] = None,
    review: Annotated[float | None, typer.Option(help="Queue for review at or above this probability.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Train the match model (Splink: prior, u by sampling, m by expectation maximisation, term frequencies)
    on the match records and score every pair again. Thresholds default to the previous ones (0.95 / 0.5)."""
    with console.status("training the match model and scoring every pair"):
        doc = call(data_dir, lambda b: b.train_matching(merge, review))
    if as_json:
        print_json(doc)
        return
    t = doc["thresholds"]
    console.print(
        f"model v{doc['version']} trained on {doc['trained_on']:,} match records "
        f"({', '.join(doc['features'])}); prior {doc['probability_two_random_records_match']:.2g}"
    )
    pairs = ", ".join(f"{n:,} {s}" for s, n in sorted(doc["pairs"].items())) or "none"
    console.print(f"pairs: {pairs} (merge >= {t['merge']}, review >= {t['review']}); {doc['merged']:,} merges")


@review_app.callback()
def review_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many pairs.")] = 20,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """List the pairs waiting for review, most probable first."""
    if ctx.invoked_subcommand is not None:
        return
    pairs = call(data_dir, lambda b: b.review_queue(limit))
    if as_json:
        sys.stdout.write(json.dumps(pairs, indent=2, default=str) + "\n")
        return
    if not pairs:
        console.print("nothing to review")
        return
    table = Table("pair", "probability", "record", "says", "other record", "says", "levels")
    for p in pairs:
        left, right = (p["records"] + [{}, {}])[:2]
        table.add_row(
            p["pair"], f"{p['probability']:.3f}", str(left.get("match_key")), _says(left),
            str(right.get("match_key")), _says(right),
            ", ".join(f"{lv['feature']}: {lv['level']}" for lv in p["levels"]),
        )  # fmt: skip
    console.print(table)
    console.print("decide with: opencdp identity review accept|reject PAIR")


def _says(record: dict[str, Any]) -> str:
    return " ".join(str(v) for k, v in record.items() if k not in ("match_key", "profile_id"))


def _decide(pair: str, decision: str, data_dir: Path | None, as_json: bool) -> None:
    doc = call(data_dir, lambda b: b.review(pair, decision))
    if as_json:
        print_json(doc)
        return
    left, right = doc["profiles"]
    together = "one profile" if left == right else "two profiles"
    console.print(f"pair {doc['pair']}: {doc['decision'] or 'undecided'}; now {together} ({left}, {right})")


@review_app.command("accept")
def review_accept(pair: Annotated[str, typer.Argument(help="ID-ID, as the list shows it.")],
                  data_dir: DataDir = None, as_json: AsJson = False) -> None:  # fmt: skip
    """The two records are one person: join them whatever their score."""
    _decide(pair, "accept", data_dir, as_json)


@review_app.command("reject")
def review_reject(pair: Annotated[str, typer.Argument(help="ID-ID, as the list shows it.")],
                  data_dir: DataDir = None, as_json: AsJson = False) -> None:  # fmt: skip
    """The two records are different people: never join them (until reset)."""
    _decide(pair, "reject", data_dir, as_json)


@review_app.command("reset")
def review_reset(pair: Annotated[str, typer.Argument(help="ID-ID, as the list shows it.")],
                 data_dir: DataDir = None, as_json: AsJson = False) -> None:  # fmt: skip
    """Forget the decision: the score decides again."""
    _decide(pair, "reset", data_dir, as_json)
