"""Progress off a terminal (a log, CI): plain lines with the current count and an ETA, one at the end."""

import re

from smalto import progress


def test_a_log_gets_whole_lines_with_current_counts_and_one_final_line(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # every update a line
    for i in progress.bar(range(4), desc="work", unit="step"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert "\r" not in "".join(lines) and all(line.startswith("work:") for line in lines)
    counts = [re.search(r"(\d+)/4", line).group(1) for line in lines]
    assert counts == ["0", "1", "2", "3", "4"]  # current at every line, the last said once
    assert re.search(r"<\d\d:\d\d", lines[1])  # an ETA


def test_a_long_job_prints_rarely_and_silence_is_one_variable(capsys, monkeypatch):
    bar = progress.bar(total=1000, desc="slow")
    for _ in range(1000):
        bar.set_postfix_str("section")
        bar.update()
    bar.close()
    assert len(capsys.readouterr().err.splitlines()) == 1  # within LOG_EVERY: the end only
    monkeypatch.setenv("SMALTO_PROGRESS", "0")
    for _ in progress.bar(range(3), desc="quiet"):
        pass
    assert capsys.readouterr().err == ""
