"""The loader's checkpoints between loads, through a crash: a process loads a first batch (checkpointed into the
database file), loads a second one (left in DuckDB's write-ahead log) and dies without closing anything; the next
process finds both batches, each message once, with the profiles computed from all of them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from opencdp.api.runtime import Runtime
from opencdp.config import Settings

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from opencdp.api.runtime import Runtime
    from opencdp.config import Settings
    from tests.identity.test_stitching import journal

    data = Path(sys.argv[1])
    wal = data / "opencdp.duckdb.wal"
    size = lambda: wal.stat().st_size if wal.exists() else 0
    rt = Runtime(Settings(data_dir=data, checkpoint_log_bytes=0))  # every light load checkpoints
    web = rt.registry.create("web", "web", None).source_id

    def orders(tag):
        return [{"type": "track", "messageId": f"{tag}-{i}", "event": "Order Completed", "userId": f"u{i % 7}",
                 "properties": {"order_id": f"{tag}-{i}", "total": 10}} for i in range(300)]

    journal(rt, web, orders("a"))  # journals and loads
    first = size()
    rt.settings = rt.settings.model_copy(update={"checkpoint_log_bytes": 1 << 40})  # no more checkpoints
    journal(rt, web, orders("b"))
    print(json.dumps({"after_checkpoint": first, "after_second": size()}), flush=True)
    os._exit(0)  # a crash: no close, no checkpoint at exit
    """
)


def test_checkpointed_and_logged_loads_both_survive_a_crash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", CHILD, str(data)], cwd=root, capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    sizes = json.loads(out.stdout.strip().splitlines()[-1])
    assert sizes["after_checkpoint"] == 0  # the first batch went into the database file
    assert sizes["after_second"] > 0  # the second is only in the write-ahead log when the process dies

    rt = Runtime(Settings(data_dir=data))
    try:
        ids = [r[0] for r in rt.engine.fetch_all("SELECT message_id FROM events")]
        assert sorted(ids) == sorted([f"a-{i}" for i in range(300)] + [f"b-{i}" for i in range(300)])
        expected = Counter(f"u{i % 7}" for _ in "ab" for i in range(300))
        for user, n in expected.items():
            assert rt.profile(f"user_id:{user}")["computed"]["order_count"] == n
            cached = rt.profile_cache.lookup(f"user_id:{user}")  # the read model, built at start
            assert cached is not None and cached.document(lineage=False)["computed"]["order_count"] == n
    finally:
        rt.close()
