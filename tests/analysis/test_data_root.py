"""`mpbn analyze` and `mpbn report` take --data-root when the data moved after training."""

import shutil

import pytest

from mpbn.cli import main

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.filterwarnings("ignore:checksum mismatch")


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    """A one-epoch run on test-written CIFAR-10 files whose data folder was then renamed."""
    from data.writers import write_cifar_folder

    tmp = tmp_path_factory.mktemp("moved")
    write_cifar_folder(tmp / "old" / "cifar-10-batches-py", per_file=20)
    run = tmp / "run"
    assert main(["train", "--dataset", "cifar10", "--data-root", str(tmp / "old"),
                 "--timesteps", "1", "--epochs", "1", "--no-fold", "--quiet",
                 "--out", str(run)]) == 0
    shutil.move(tmp / "old", tmp / "new")
    return run, tmp / "old", tmp / "new"


def test_analyze_without_data_root_fails_on_the_recorded_path(moved_run, tmp_path, capsys):
    run, old, _ = moved_run
    assert main(["analyze", "spikes", str(run), "-o", str(tmp_path), "--n-samples", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpbn: error: ") and str(old) in err and err.count("\n") == 1
    assert err.endswith("if the data moved, give its folder with --data-root\n")


def test_analyze_spikes_reads_the_moved_data(moved_run, tmp_path, capsys):
    run, _, new = moved_run
    assert main(["analyze", "spikes", str(run), "-o", str(tmp_path), "--n-samples", "8",
                 "--data-root", str(new)]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "spikes.json").is_file()


def test_report_reads_the_moved_data(moved_run, tmp_path):
    run, _, new = moved_run
    skip = ["curves", "landscape", "energy", "gamma", "early-exit", "robustness", "fold"]
    assert main(["report", str(run), "-o", str(tmp_path / "without"), "--n-samples", "8",
                 "--skip", *skip]) == 0
    assert "test data unavailable" in (tmp_path / "without/report.md").read_text()
    assert main(["report", str(run), "-o", str(tmp_path / "with"), "--n-samples", "8",
                 "--data-root", str(new), "--skip", *skip]) == 0
    text = (tmp_path / "with/report.md").read_text()
    assert "test data unavailable" not in text and "## Spike activity" in text


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "is a file, not a folder"),
    (lambda p: None, "does not exist; give the folder the dataset files are in now"),
])
def test_a_bad_data_root_is_one_line(moved_run, tmp_path, capsys, make, message):
    run, _, _ = moved_run
    make(tmp_path / "root")
    assert main(["analyze", "spikes", str(run), "-o", str(tmp_path / "o"),
                 "--data-root", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mpbn: error: --data-root {tmp_path / 'root'} {message}")
    assert err.count("\n") == 1


def test_heldout_run_whose_data_moved(tmp_path):
    """A data.holdout run (issue 18's layout): report and landscape read the moved test set."""
    from data.writers import write_cifar_folder

    write_cifar_folder(tmp_path / "old" / "cifar-10-batches-py", per_file=20)
    run = tmp_path / "run"
    assert main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "old"),
                 "--timesteps", "1", "--epochs", "1", "--quiet", "--set", "data.holdout=20",
                 "--out", str(run)]) == 0
    shutil.move(tmp_path / "old", tmp_path / "new")
    assert main(["analyze", "landscape", str(run), "-o", str(tmp_path / "l"), "--n-samples", "8",
                 "--n-points", "3", "--data-root", str(tmp_path / "new")]) == 0
    assert main(["report", str(run), "-o", str(tmp_path / "r"), "--n-samples", "8",
                 "--data-root", str(tmp_path / "new"), "--skip", "landscape", "energy", "gamma",
                 "early-exit", "robustness"]) == 0
    text = (tmp_path / "r/report.md").read_text()
    assert "test data unavailable" not in text and "Not available" not in text, text
    assert "held-out acc, final (%)" in text and "Held-out accuracy and loss" in text
    assert "spike mismatch folded vs unfolded" in text
