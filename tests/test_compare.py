"""hlrm compare: configuration, runs reused or resumed, report files, the quick ml-100k preset."""

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from cli_helpers import assert_clean_error, run_cli
from hlrm import plots
from hlrm.compare import CompareConfig, Published, compare, read_toml
from hlrm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs" / "compare").glob("*.toml"))
PROTOCOLS = sorted((ROOT / "configs" / "protocols").glob("*.toml"))


def synthetic(models=("popularity", "cml"), **compare_options) -> CompareConfig:
    """A tiny comparison on the built-in synthetic data: one epoch, a couple of seconds."""
    raw = {
        "data": {"dataset": "synthetic"},
        "train": {"epochs": 1, "lr": 0.002, "device": "cpu"},
        "eval": {"ks": [5, 10], "cohorts": 2, "cohort_size": 200},
        "model": {"dim": 16},
        "compare": {"models": list(models), **compare_options},
    }
    return CompareConfig.from_dict(raw, "test")


# ---- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PRESETS + PROTOCOLS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_configs_load_and_validate(path):
    config = CompareConfig.from_toml(path)
    config.models = config.models or ["cml"]
    config.base.data.dataset = config.base.data.dataset or "ml-100k"
    config.validate()
    if path.parent.name == "protocols":
        assert set(read_toml(path)) <= {"seed", "data", "eval"}, "presets: data and eval only"
    again = CompareConfig.from_dict(CompareConfig.from_toml(path).to_dict())
    assert again.to_dict() == CompareConfig.from_toml(path).to_dict()


def test_presets_say_what_the_issue_asks():
    paper = CompareConfig.from_toml(ROOT / "configs/protocols/hlr-paper.toml").base
    assert (paper.data.min_rating, paper.data.user_core, paper.data.item_core) == (4.0, 10, 10)
    assert (paper.data.split, paper.data.fractions, paper.seed) == (
        "random",
        (0.72, 0.08, 0.20),
        2021,
    )
    assert (paper.eval.cohorts, paper.eval.cohort_size) == (5, 10_000)
    lightgcn = CompareConfig.from_toml(ROOT / "configs/compare/lightgcn-gowalla.toml")
    assert lightgcn.base.data.dataset == "gowalla" and lightgcn.base.data.split == "given"
    assert lightgcn.base.eval.ks == [20] and lightgcn.base.eval.cohorts == 0
    assert lightgcn.published[0].metrics == {"recall@20": 0.1830, "ndcg@20": 0.1554}
    loo = CompareConfig.from_toml(ROOT / "configs/protocols/loo.toml").base
    assert loo.data.split == "leave_one_out" and loo.eval.max_users == 0


def test_include_overrides_and_per_model_options(tmp_path):
    (tmp_path / "protocol.toml").write_text('[data]\nsplit = "random"\nuser_core = 5\n')
    (tmp_path / "compare.toml").write_text(
        'include = "protocol.toml"\n'
        '[data]\ndataset = "synthetic"\nuser_core = 3\n'
        "[train]\nlr = 0.001\n"
        "[model]\ndim = 32\n"
        '[compare]\nmodels = ["popularity", "cml", "lrml", "hlr-unpop"]\n'
        "[models.lrml]\nlr = 0.01\nn_slots = 7\n"
        '[models.hlr-unpop]\nmodel = "hlr"\nhistory_sampling = "unpop"\n'
    )
    config = CompareConfig.from_toml(tmp_path / "compare.toml")
    config.validate()
    assert config.base.data.split == "random" and config.base.data.user_core == 3
    assert config.baseline_label == "popularity"  # the first model by default
    runs = {run.label: run.config for run in config.planned_runs()}
    assert runs["popularity"].model.params == {}  # dim applies only where a model has it
    assert runs["cml"].model.params["dim"] == 32 and runs["cml"].train.lr == 0.001
    assert runs["lrml"].train.lr == 0.01 and runs["lrml"].model.params["n_slots"] == 7
    assert runs["hlr-unpop"].model.name == "hlr"
    assert runs["hlr-unpop"].model.params["history_sampling"] == "unpop"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"compare": {"models": ["cml", "nosuchmodel"]}}, "unknown model 'nosuchmodel'"),
        ({"compare": {"models": ["cml"], "baseline": "bpr"}}, "baseline 'bpr'"),
        ({"compare": {"models": []}}, "no models to compare"),
        ({"compare": {"models": ["cml"], "colour": 1}}, "unknown option(s) in [compare]"),
        ({"compare": {"models": ["cml"], "seeds": ["a"]}}, "integers"),
        ({"compare": {"models": ["cml"], "metrics": ["nope@10"]}}, "unknown metric"),
        ({"compare": {"models": ["cml"], "metrics": ["ndcg@7"]}}, "k=7"),
        ({"compare": {"models": ["cml"], "alpha": 2.0}}, "alpha"),
        ({"compare": {"models": ["cml"], "published": [{"name": "x"}]}}, "metrics table"),
        ({"compare": {"models": ["cml"]}, "models": {"cml": {"n_slots": 3}}}, "n_slots"),
        ({"compare": {"models": ["cml"]}, "models": {"lrlm": {"lr": 0.1}}}, "'lrlm'"),
        ({"compare": {"models": ["cml"]}, "model": {"name": "cml"}}, "[model] name"),
        ({"compare": {"models": ["cml"]}, "model": {"n_slots": 3}}, "n_slots"),
        ({"compare": {"models": ["cml", "cml"]}}, "twice"),
        ({"compare": {"models": ["cml"]}, "models": {"cml": {"lr": "fast"}}}, "malformed"),
        (
            {"compare": {"models": ["cml"], "published": [{"name": "x", "metrics": {"a@7": 1}}]}},
            "a@7 is not in the table",
        ),
        ({"compare": {"models": ["cml"]}, "trian": {}}, "unknown key(s) trian"),
        (
            {"compare": {"models": ["hlr", "cml"]}, "models": {"hlr": {"init_from": "cml"}}},
            "name a model listed before 'hlr'",
        ),
    ],
)
def test_bad_configs_fail_before_training_with_one_clear_message(change, fragment):
    raw = {"data": {"dataset": "synthetic"}, **change}
    with pytest.raises(ConfigError) as info:
        CompareConfig.from_dict(raw, "bad.toml").validate()
    assert fragment in str(info.value)


def test_cli_bad_input_is_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(
        monkeypatch, capsys, "compare", "--models", "cml,foo", "--dataset", "synthetic",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert_clean_error(code, err, "unknown model 'foo'")
    code, _, err = run_cli(
        monkeypatch, capsys, "compare", "--models", "cml,bpr", "--baseline", "lrml",
        "--dataset", "synthetic", "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert_clean_error(code, err, "baseline 'lrml'")
    broken = tmp_path / "broken.toml"
    broken.write_text("[compare\nmodels = 1\n")
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--config", str(broken))
    assert_clean_error(code, err, "invalid TOML")
    cycle = tmp_path / "cycle.toml"
    cycle.write_text('include = "cycle.toml"\n')
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--config", str(cycle))
    assert_clean_error(code, err, "include cycle")
    assert not (tmp_path / "r").exists()


# ---- runs and report -----------------------------------------------------------------------------
def test_seeds_reuse_resume_and_report(tmp_path):
    config = synthetic(("popularity", "cml"), seeds=[1, 2], baseline="popularity")
    config.published = [Published("Someone (published)", {"ndcg@10": 0.5}, "a paper")]
    lines: list[str] = []
    report = compare(config, tmp_path, progress=False, log=lines.append, command="hlrm test")
    assert report.statuses == {
        "popularity": {1: "trained", 2: "trained"},
        "cml": {1: "trained", 2: "trained"},
    }
    for name in ("table.md", "table.csv", "table.json", "compare.toml", "commands.sh"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "runs/cml/seed-2/per_user_metrics.parquet").is_file()

    # mean ± sample std over the seeds' run-level values
    values = [
        json.loads((tmp_path / f"runs/cml/seed-{s}/metrics.json").read_text())["ndcg@10"]
        for s in (1, 2)
    ]
    mean, std = report.summary["cml"]["ndcg@10"]
    assert mean == pytest.approx(sum(values) / 2)
    assert std == pytest.approx(pd.Series(values).std(ddof=1))

    table = pd.read_csv(tmp_path / "table.csv")
    cml = table[(table["label"] == "cml") & (table["metric"] == "ndcg@10")].iloc[0]
    assert 0 <= cml["p_wilcoxon"] <= cml["p_wilcoxon_holm"] <= 1
    assert cml["p_ttest_holm"] >= cml["p_ttest"]
    assert set(table["kind"]) == {"model", "published"}
    assert table[table["kind"] == "published"]["metric"].tolist() == ["ndcg@10"]
    twin = table[(table["label"] == "cml") & (table["metric"] == "global_ndcg@10")].iloc[0]
    assert twin["p_wilcoxon"] == cml["p_wilcoxon"]  # a twin is not tested twice
    assert table[table["metric"] == "coverage@10"]["p_wilcoxon"].isna().all()

    summary = json.loads((tmp_path / "table.json").read_text())
    assert summary["command"] == "hlrm test"
    assert "seeds 1, 2" in summary["spread"]
    assert summary["models"]["cml"]["runs"][0]["config"]["seed"] == 1
    tests = summary["tests"]["results"]
    assert {t["model"] for t in tests} == {"cml"}
    assert len(tests) == 2 * 9  # 2 ks x 9 per-user metrics (twins and list metrics left out)
    markdown = (tmp_path / "table.md").read_text()
    assert "## @5" in markdown and "## @10" in markdown
    assert "| popularity (baseline) |" in markdown and "| Someone (published) |" in markdown
    assert "seeds 1, 2" in markdown
    assert "| cml | 2 | 1 / 1 | 1 |" in markdown  # ## Runs: epochs run / budget, kept epoch
    assert "| popularity | 1 | – | – | – | – |" in markdown
    commands = (tmp_path / "commands.sh").read_text()
    assert "hlrm compare --config compare.toml --out ." in commands
    assert "runs/cml/seed-2/config.toml" in commands
    rebuilt = CompareConfig.from_toml(tmp_path / "compare.toml")
    assert rebuilt.to_dict() == config.to_dict()

    # a second call reuses every finished run; an interrupted one resumes from its checkpoint
    (tmp_path / "runs/cml/seed-2/metrics.json").unlink()
    again = compare(config, tmp_path, progress=False, log=lines.append)
    assert again.statuses["popularity"] == {1: "reused", 2: "reused"}
    assert again.statuses["cml"] == {1: "reused", 2: "resumed"}
    assert again.summary["cml"]["ndcg@10"] == pytest.approx(report.summary["cml"]["ndcg@10"])

    # a run written before keep_start and pretrain existed lacks them: it did what their
    # neutral values do, so it is reused
    stored = tmp_path / "runs/cml/seed-1/config.toml"
    lines_kept = [
        line
        for line in stored.read_text().splitlines()
        if not line.startswith(("keep_start", "pretrain"))
    ]
    stored.write_text("\n".join(lines_kept) + "\n")
    assert (
        compare(config, tmp_path, progress=False, log=lines.append).statuses["cml"][1] == "reused"
    )

    # a run trained under another configuration is never mixed in
    config.base.train.lr = 0.01
    with pytest.raises(ConfigError, match="train.lr"):
        compare(config, tmp_path, progress=False, log=lines.append)
    assert CompareConfig.from_toml(tmp_path / "compare.toml").base.train.lr == 0.002


def test_warm_start_from_another_label_of_the_report(tmp_path):
    config = synthetic(("cml", "hlr-warm"))
    config.overrides = {"hlr-warm": {"model": "hlr", "init_from": "cml", "history_size": 5}}
    compare(config, tmp_path / "report", progress=False, make_plots=False, log=lambda _: None)
    runs = tmp_path / "report" / "runs"
    stored = read_toml(runs / "hlr-warm" / "config.toml")
    assert Path(stored["init_from"]) == tmp_path / "report" / "runs" / "cml"
    moved = tmp_path / "moved"
    (tmp_path / "report").rename(moved)  # the source is matched relative to the report
    again = compare(config, moved, progress=False, make_plots=False, log=lambda _: None)
    assert again.statuses == {"cml": {2021: "reused"}, "hlr-warm": {2021: "reused"}}


def test_plots_written_or_skipped_with_a_notice(tmp_path, monkeypatch):
    if plots.available():
        report = compare(synthetic(), tmp_path / "with", progress=False, log=lambda _: None)
        for name in ("metrics.png", "ndcg_at_k.png", "training_curves.png"):
            path = tmp_path / "with" / "plots" / name
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
            assert path in report.files
    monkeypatch.setattr(plots, "available", lambda: False)
    lines: list[str] = []
    compare(synthetic(), tmp_path / "without", progress=False, log=lines.append)
    assert not (tmp_path / "without" / "plots").exists()
    assert [line for line in lines if "plots skipped" in line] == [
        "plots skipped: matplotlib is not installed (pip install 'hlrm[plots]')"
    ]


def test_quick_preset_on_ml100k_via_the_cli(monkeypatch, capsys, tmp_path, data_dir):
    """The issue's definition of done: the quick preset runs in the suite in under two minutes."""
    monkeypatch.setenv("HLRM_DATA_DIR", str(data_dir))
    out = tmp_path / "quick"
    started = time.perf_counter()
    code, stdout, err = run_cli(
        monkeypatch, capsys, "compare", "--config", str(ROOT / "configs/compare/quick.toml"),
        "--out", str(out), "--quiet",
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert code == 0, err
    print(f"quick preset: {elapsed:.1f} s")
    assert "test metrics @10" in stdout
    markdown = (out / "table.md").read_text()
    for label in ("popularity", "cml (baseline)", "bpr", "lrml"):
        assert f"| {label} |" in markdown
    assert "over 5 cohort(s)" in markdown
    assert "paper_map" in markdown and "local_ndcg" in markdown  # official variants too
    table = pd.read_csv(out / "table.csv")
    ndcg = table[table["metric"] == "ndcg@10"].set_index("label")
    assert ndcg["std"].notna().all()  # over the cohorts
    assert ndcg.loc[["popularity", "bpr", "lrml"], "p_wilcoxon_holm"].notna().all()
    per_user = pd.read_parquet(out / "runs/lrml/per_user_metrics.parquet")
    assert per_user["cohort"].nunique() == 5


def test_marks_lead_with_the_side_of_the_baseline():
    from hlrm.compare import Report
    from hlrm.evaluation.significance import PairedTest

    def tested(model, delta, p_wilcoxon, p_ttest):
        return PairedTest(model, "cml", "ndcg@10", 100, 0.2 + delta, 0.2, delta, 0.0, 0.0,
                          p_wilcoxon, p_ttest)  # fmt: skip

    config = synthetic(("cml", "hlr", "lrml", "bpr"))
    tests = [tested("hlr", 0.02, 0.001, 0.2), tested("lrml", -0.05, 0.001, 0.001),
             tested("bpr", 0.01, 0.5, 0.5)]  # fmt: skip
    report = Report(Path("."), config, ["ndcg@10"], {}, tests, {}, [])
    assert report.marks("hlr", "ndcg@10") == "↑*"
    assert report.marks("lrml", "global_ndcg@10") == "↓*†"  # a twin shows its twin's marks
    assert report.marks("bpr", "ndcg@10") == ""
