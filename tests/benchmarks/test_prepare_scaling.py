"""The preparation benchmark's pieces: corpora of distinct seeded files that a larger size
extends, and peak memory counted over a whole process tree."""

import os
import subprocess
import sys
import time

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import prepare_scaling  # noqa: E402


@pytest.mark.skipif(not os.path.isdir(prepare_scaling.SHAKESPEARE),
                    reason="needs ../shared/data/text/openshakespeare")
def test_corpora_are_distinct_seeded_files_and_a_larger_one_extends_a_smaller(tmp_path):
    plays = prepare_scaling.shakespeare_paragraphs()
    small = prepare_scaling.write_corpus(str(tmp_path / "a"), 2, plays)
    large = prepare_scaling.write_corpus(str(tmp_path / "b"), 3, plays)
    names = sorted(os.listdir(tmp_path / "b"))
    assert names == ["part-00000.txt", "part-00001.txt", "part-00002.txt"]
    texts = [(tmp_path / "b" / n).read_text(encoding="utf-8") for n in names]
    assert all(1e6 <= len(t.encode("utf-8")) < 1.02e6 for t in texts)
    assert len(set(texts)) == 3  # each file its own draw
    assert (tmp_path / "a" / names[1]).read_text(encoding="utf-8") == texts[1]
    assert small.endswith("*.txt") and large.endswith("*.txt")


def test_tree_rss_counts_child_processes():
    child = subprocess.Popen([sys.executable, "-c",
                              "x = bytearray(200 * 2**20); import time; time.sleep(30)"])
    try:
        me = psutil.Process()
        deadline = time.time() + 20
        while time.time() < deadline and prepare_scaling.tree_rss(me) < (
                me.memory_info().rss + 200 * 2**20):
            time.sleep(0.1)
        assert prepare_scaling.tree_rss(me) >= me.memory_info().rss + 200 * 2**20
    finally:
        child.kill()
        child.wait()
