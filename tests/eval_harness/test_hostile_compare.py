"""``compare`` against a judge that fails part-way: no partial score passes for a result, no judges are mixed silently.

Two runs (the tiny model twice), two MT-Bench questions, a loopback judge over a real socket.
Before issue 18 the partial result was cached as done (a score from the remaining judgments,
"parse failures 0", exit 0, skipped by the next run), and a second judge's scores stood next to
the first one's with stars between them.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from eval_harness.compare import CompareSettings, compare
from tests.eval_harness.hostile_judge import HostileJudge, completion

QUESTION_IDS = (81, 91)


@pytest.fixture(scope="module")
def bench_dir(shared_data, tmp_path_factory) -> Path:
    src, dst = shared_data / "mt_bench", tmp_path_factory.mktemp("mt_bench_two")
    shutil.copytree(src / "reference_answer", dst / "reference_answer")
    shutil.copy(src / "judge_prompts.jsonl", dst)
    lines = [line for line in (src / "question.jsonl").read_text().splitlines()
             if json.loads(line)["question_id"] in QUESTION_IDS]
    (dst / "question.jsonl").write_text("\n".join(lines) + "\n")
    return dst


def _question_91(bench_dir: Path) -> str:
    return next(json.loads(line)["turns"][0] for line in (bench_dir / "question.jsonl").read_text().splitlines()
                if json.loads(line)["question_id"] == 91)


def _compare(runs: Path, bench_dir: Path, server: HostileJudge) -> tuple[int, str]:
    settings = CompareSettings(runs_dir=runs, output=runs / "report", tasks=["mt_bench"], mt_bench_dir=bench_dir,
                               judge_model="test-judge", judge_base_url=server.base_url, max_new_tokens=4,
                               device="cpu", dtype="float32", batch_size="1", formats=["md", "csv", "json"])
    out, log = io.StringIO(), io.StringIO()
    status = compare(settings, out=out, log=log)
    return status, out.getvalue() + log.getvalue()


def _rows(runs: Path) -> dict[str, dict]:
    with (runs / "report" / "leaderboard.csv").open() as fh:
        return {row["run"]: row for row in csv.DictReader(fh)}


def test_missing_judgments_are_never_a_result_and_judges_never_mix(tiny_root, bench_dir, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("m1", "m2"):
        (runs / name).symlink_to(tiny_root / "model", target_is_directory=True)
    q91 = _question_91(bench_dir)

    def flaky(s, h, body, n):  # m1 (requests 1-4): question 91 refused or garbled; m2 (5-8): all refused
        if n > 4 or q91 in body["messages"][-1]["content"]:
            return s.reply(h, 400, b'{"error": "bad request"}') if n % 2 else s.reply(h, 200, b"<html>oops</html>",
                                                                                       "text/html")
        return s.reply(h, 200, completion("Rating: [[4]]"))

    judge_a = HostileJudge(flaky)
    try:
        status, said = _compare(runs, bench_dir, judge_a)
        assert status == 1, said
        rows = _rows(runs)
        assert rows["m1"]["mt_bench_status"] == "incomplete: 2 of 4 judgments missing"
        assert rows["m2"]["mt_bench_status"] == "incomplete: 4 of 4 judgments missing"
        assert rows["m1"]["mt_bench_overall"] == "" and rows["m2"]["mt_bench_overall"] == ""  # no partial score
        assert "MT-Bench status" in (runs / "report" / "leaderboard.md").read_text().splitlines()[0]
        assert "2 of 4 judgments missing" in said and "4 of 4 judgments missing" in said

        judge_a.behave = lambda s, h, body, n: s.reply(h, 200, completion("Rating: [[4]]"))
        asked_before = len(judge_a.requests)
        status, said = _compare(runs, bench_dir, judge_a)
        assert status == 0, said
        assert len(judge_a.requests) - asked_before == 6  # exactly the missing judgments, none twice
        assert {r["mt_bench_overall"] for r in _rows(runs).values()} == {"4.0"}
    finally:
        judge_a.close()

    # judge B: the same model name at another endpoint, refusing the key after m1
    judge_b = HostileJudge(lambda s, h, body, n: s.reply(h, 200, completion("Rating: [[9]]")) if n <= 4
                           else s.reply(h, 401, b'{"error": "bad key"}'))
    try:
        status, said = _compare(runs, bench_dir, judge_b)
    finally:
        judge_b.close()
    assert status == 1, said
    # m1 judged anew (4), judge A's verdicts not reused for endpoint B; then m2's requests (up to 4 at once) refused
    assert 5 <= len(judge_b.requests) <= 8
    rows = _rows(runs)
    assert (rows["m1"]["mt_bench_overall"], rows["m2"]["mt_bench_overall"]) == ("9.0", "4.0")
    assert rows["m1"]["mt_bench_judge"] == f"test-judge at {judge_b.base_url}"
    assert rows["m2"]["mt_bench_judge"] == f"test-judge at {judge_a.base_url}"
    md = (runs / "report" / "leaderboard.md").read_text()
    assert "MT-Bench judge" in md.splitlines()[0] and "2 different judges" in md
    assert "**9.00" not in md and "**9.0" not in md  # never ranked against a score of another judge
    record = json.loads((runs / "report" / "results.json").read_text())
    assert not [t for t in record["statistics"]["pairs"] if t["benchmark"] == "MT-Bench"]
