"""Every kind of bad input in ``bad_input_cases.ROWS`` is refused with its error class, a message that names the
culprit, and (for store rows) the stored data intact afterwards.

``python tests/test_bad_input_table.py --markdown`` prints the table for the docs.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bad_input_cases, also when run as a script

from bad_input_cases import AREAS, ROWS, Ctx, culprit_found, markdown, message_of  # noqa: E402


def _param(row):
    return pytest.param(row, id=f"{row.area}:{row.id}")


def test_the_table_covers_every_area_with_distinct_kinds():
    assert len(ROWS) >= 70
    assert {r.area for r in ROWS} == set(AREAS)
    assert all(sum(r.area == a for r in ROWS) >= 10 for a in AREAS)
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), "row ids must be unique"
    assert all(r.culprit and (r.error is None) == (r.warning is not None) for r in ROWS)
    assert not [r.id for r in ROWS if isinstance(r.error, tuple)], "each kind names one error class"


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("row", [_param(r) for r in ROWS])
def test_bad_input_is_refused_naming_the_culprit(row, tmp_path, request):
    ctx = Ctx(tmp_path, request)
    try:
        stderr = io.StringIO()
        if row.warning is not None:
            with pytest.warns(row.warning) as record:
                row.call(ctx)
            text = "\n".join(str(w.message) for w in record if issubclass(w.category, row.warning))
        else:
            with pytest.raises(row.error) as info, contextlib.redirect_stderr(stderr):
                row.call(ctx)
            text = message_of(info.value, stderr.getvalue())
        missing = [c for c in ctx.culprits(row) if not culprit_found(c, text)]
        assert not missing, f"the message does not name {missing}:\n{text}"
        if row.after is not None:
            row.after(ctx)
        if row.intact:
            assert ctx.held, "an intact-check row must use ctx.stored() or ctx.records()"
            for held in ctx.held:
                held.check_intact()
    finally:
        ctx.close()


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        print(markdown())
    else:
        print(__doc__)
