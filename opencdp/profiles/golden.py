"""Golden traits: survivorship compiled to one ranking statement (pure functions, no connection).

For each (profile, trait), every observation of the profile's identifiers is ranked by the trait's rule (its
criteria in order, then the latest report), and the first one survives with its lineage: the source, the
message or record (``seq``) and when it was reported. Because observations belong to identifiers, a merge
ranks the union and a split gives each side back exactly its own observations. An email or phone survives only
if it is one of the profile's own identifiers: after a split, the side that kept the user id does not show the
email that was split off, even though a message of its user id once reported it.
"""

from __future__ import annotations

from opencdp.govern.plans import lit
from opencdp.model.profiles import GOLDEN_TRAITS, Criterion, ProfileSettings, Survivorship


def _key(criterion: Criterion, rule: Survivorship, sources: dict[str, str]) -> str:
    """A number that sorts the better observation first for one criterion."""
    if criterion == "verified":
        return "CASE WHEN verified THEN 0 ELSE 1 END"
    if criterion == "source_priority":
        ids = [sources.get(s, s) for s in rule.sources]
        whens = " ".join(f"WHEN {lit(s)} THEN {i}" for i, s in enumerate(ids))
        return f"CASE source_id {whens} ELSE {len(ids)} END"
    if criterion == "most_frequent":
        return "-reports"
    if criterion == "most_recent":
        return "-epoch(observed_at)"
    return "epoch(observed_at)"


def _describe(rule: Survivorship) -> str:
    return ", ".join(rule.order) + (f" ({' > '.join(rule.sources)})" if rule.sources else "")


def golden(settings: ProfileSettings, members: str, sources: dict[str, str]) -> str:
    """``SELECT profile_id, trait, value, source_id, origin, from_record, seq, observed_at, rule`` for the
    profiles whose identifiers are in ``members`` (``node_id``, ``profile_id``); ``sources`` maps source names
    to ids (rules may name either)."""
    names = sorted({t.name for t in GOLDEN_TRAITS} | set(settings.survivorship))
    special = {name: settings.rule(name) for name in names}
    default = settings.rule("")
    depth = max([len(default.order), *(len(r.order) for r in special.values())])
    keys = []
    for i in range(depth):
        whens = " ".join(
            f"WHEN {lit(name)} THEN {_key(rule.order[i], rule, sources) if i < len(rule.order) else '0'}"
            for name, rule in special.items()
        )
        otherwise = _key(default.order[i], default, sources) if i < len(default.order) else "0"
        keys.append(f"CASE trait {whens} ELSE {otherwise} END" if whens else otherwise)
    described = " ".join(f"WHEN {lit(name)} THEN {lit(_describe(rule))}" for name, rule in special.items())
    rule_text = f"CASE trait {described} ELSE {lit(_describe(default))} END" if described else lit(_describe(default))
    order = ", ".join([*keys, "observed_at DESC", "seq DESC"])
    identifying = ", ".join(lit(t.name) for t in GOLDEN_TRAITS if t.normaliser != "text")
    return f"""SELECT profile_id, trait, value, source_id, origin, verified, seq, observed_at, {rule_text} AS rule
    FROM (
        SELECT *, row_number() OVER (PARTITION BY profile_id, trait ORDER BY {order}) AS rank FROM (
            SELECT m.profile_id, o.trait, o.value, o.source_id, o.origin, o.seq, o.observed_at, o.verified,
                   count(*) OVER (PARTITION BY m.profile_id, o.trait, o.value) AS reports
            FROM trait_observations AS o JOIN {members} AS m ON m.node_id = o.node_id
            WHERE o.trait NOT IN ({identifying}) OR EXISTS (
                SELECT 1 FROM {members} AS own JOIN identity_nodes AS n ON n.node_id = own.node_id
                WHERE own.profile_id = m.profile_id AND n.id_type = o.trait AND n.id_value = o.value)
        ) AS counted) AS ranked
    WHERE rank = 1"""
