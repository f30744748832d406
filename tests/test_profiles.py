import json
from pathlib import Path

import click
import pytest
import yaml
from synthetic import mirror_files

from raglab.experiments.profiles import flatten, set_param_args

REPO = Path(__file__).resolve().parents[1]


def test_flatten_and_dvc_set_param_args(monkeypatch):
    monkeypatch.setenv("MODEL_DIR", "/models/minilm")
    overlay = {"a": {"b": 1, "c": [3, 30], "d": None, "e": "$MODEL_DIR", "f": "fp32"}, "g": "x y: z",
               "h": ["pkg-part1==0.9.0", "pkg_part1/data/part01.bin"]}
    assert flatten(overlay) == [("a.b", 1), ("a.c", [3, 30]), ("a.d", None), ("a.e", "/models/minilm"),
                                ("a.f", "fp32"), ("g", "x y: z"), ("h", ["pkg-part1==0.9.0", "pkg_part1/data/part01.bin"])]
    assert set_param_args(overlay) == ["-S", "a.b=1", "-S", "a.c=[3, 30]", "-S", "a.d=null",
                                       "-S", "a.e=/models/minilm", "-S", "a.f=fp32", "-S", "g='x y: z'",
                                       "-S", 'h=["pkg-part1==0.9.0", "pkg_part1/data/part01.bin"]']


def test_unset_variable_is_an_error(monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(click.UsageError, match="unset environment variable"):
        flatten({"embedder": {"model": "$NOPE_NOT_SET"}})


def test_profiles_only_set_keys_that_params_yaml_has():
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for path in (REPO / "profiles").rglob("*.yaml"):
        overlay = yaml.safe_load(path.read_text())

        def walk(o, p, where):
            for k, v in o.items():
                assert k in p, f"{path.name}: {where}{k} is not a parameter in params.yaml"
                if isinstance(v, dict):
                    walk(v, p[k], f"{where}{k}.")

        walk(overlay, params, "")


@pytest.mark.parametrize("profile", sorted(p.stem for p in (REPO / "profiles").glob("*.yaml")))
def test_every_profile_set_through_dvc_validates(profile, tmp_path, monkeypatch):
    """The params.yaml that ``dvc exp run -S`` writes (DVC's own Hydra overrides, ruamel's YAML 1.2:
    5.0e-5 comes back as ``5e-05``) is read as the numbers it holds, and every profile validates."""
    import shutil

    from dvc.utils.hydra import apply_overrides

    from raglab.params.loader import load_params, load_profiles

    for var in ("MINILM_DIR", "TINY_LLM_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_file)
    monkeypatch.chdir(REPO)  # profiles are found under profiles/
    overlay = load_profiles(profile)
    apply_overrides(params_file, set_param_args(overlay)[1::2])
    params = load_params(params_file)
    for key, value in flatten(overlay):
        node = params
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        node = node.model_dump() if hasattr(node, "model_dump") else node
        assert node == value, key


def test_committed_demo_mirror_is_what_the_generator_writes():
    for rel, text in mirror_files().items():
        assert (REPO / "data" / "demo-mirror" / rel).read_text(encoding="utf-8") == text, rel


def test_record_copies_params_lock_and_metrics_of_the_experiment(tmp_path, monkeypatch):
    import subprocess

    from raglab.experiments.records import record_experiment

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "dvc.yaml").write_text("stages: {}\nmetrics:\n  - metrics/retrieval.json\n")
    (tmp_path / "params.yaml").write_text("train_embed:\n  epochs: 2\n")
    git("add", "-A")
    git("commit", "-qm", "baseline")
    head = git("rev-parse", "HEAD")
    # an experiment commit as `dvc exp run -n cpu` leaves it: other params, a lock, metrics
    (tmp_path / "params.yaml").write_text("train_embed:\n  epochs: 3\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "retrieval.json").write_text('{"test": {"tuned": {"hit@1": 0.9}}}\n')
    git("add", "-A")
    exp = git("commit-tree", git("write-tree"), "-p", head, "-m", "exp")
    git("update-ref", f"refs/exps/{head[:2]}/{head[2:]}/cpu", exp)
    git("reset", "-q", "--hard", head)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "cpu" / "metrics").mkdir(parents=True)
    (tmp_path / "results" / "cpu" / "metrics" / "math.json").write_text("{}")  # from an earlier run: goes
    sharing = {"shared": True, "others_share": 0.42}
    assert record_experiment("cpu", "results/cpu", sharing) == ["params.yaml", "dvc.lock", "metrics/retrieval.json",
                                                                "machine.json"]
    assert (tmp_path / "results/cpu/params.yaml").read_text() == "train_embed:\n  epochs: 3\n"
    # the machine that recorded it, measured, with the runner's sharing (the lock has no stages to time)
    machine = json.loads((tmp_path / "results/cpu/machine.json").read_text())
    assert machine["source"] == "measured" and machine["shared"] is True and machine["others_share"] == 0.42
    assert machine["cpu"]["cores"] >= 1 and machine["packages"]["dvc"] and machine["stages"] == {}
    assert (tmp_path / "results/cpu/metrics/retrieval.json").read_text().startswith('{"test"')
    # the baseline: every record's metrics under its name, one file that dvc.yaml lists
    baseline = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert baseline == {"cpu": {"retrieval": {"test": {"tuned": {"hit@1": 0.9}}}}}
    assert not (tmp_path / "results" / "cpu" / "metrics" / "math.json").exists()
    with pytest.raises(click.ClickException, match="no experiment 'other'"):
        record_experiment("other", "results/other")


def test_every_point_of_a_sweep_is_validated_before_anything_is_queued():
    from raglab.params.loader import check
    from raglab.params.schema import ParamsError

    check(REPO / "params.yaml", None, ("train_embed.learning_rate=5e-5,2e-4", "train_llm.lora_rank=8,16"))
    with pytest.raises(ParamsError, match="negatives: Input should be 'random' or 'hard' \\(got 'hardest'\\)"):
        check(REPO / "params.yaml", None, ("train_embed.learning_rate=5e-5,2e-4",
                                           "build_embed_negatives.negatives=random,hardest"))


def test_set_values_are_read_as_dvc_applies_them():
    """``-S`` values go through Hydra's grammar, as ``dvc exp run -S`` applies them: a URL keeps its colons (a
    sweep point comes back escaped), lists, nulls and numbers are typed."""
    from raglab.params.loader import check

    params = check(REPO / "params.yaml", None, (
        "score.rag.judge.kind=endpoint", "score.rag.judge.base_url=http://127.0.0.1:8000/v1",
        "score.rag.judge.model=judge", "download.datasets.cmrc2018.splits=[validation,trial_a]",
        "build_sft.max_eval=null", "train_llm.learning_rate=5e-5,1e-4"))
    assert params.score.rag.judge.base_url == "http://127.0.0.1:8000/v1"
    assert params.download.datasets["cmrc2018"].splits == ["validation", "trial_a"]
    assert params.build_sft.max_eval is None and params.train_llm.learning_rate == 5e-5


def test_every_servable_record_loads_in_todays_schema(monkeypatch):
    """The assistant serves a record (one with its adapter) with its params: groups added since the run take
    today's defaults."""
    from raglab.experiments.records import record_params
    from raglab.params.schema import validate

    monkeypatch.chdir(REPO)
    records = sorted(p.parent for p in (REPO / "results").glob("*/llm-adapter"))
    assert records
    for record in records:
        params = validate(record_params(record), str(record))
        recorded = yaml.safe_load((record / "params.yaml").read_text(encoding="utf-8"))
        assert params.llm.model == recorded["llm"]["model"]  # the record's own values win


@pytest.fixture
def checkout_without_git_identity(tmp_path, monkeypatch):
    """A git checkout as the cwd, with no identity in its config, the user's or the system's, nor the environment."""
    import subprocess

    for role in ("AUTHOR", "COMMITTER"):
        for key in ("NAME", "EMAIL"):
            monkeypatch.delenv(f"GIT_{role}_{key}", raising=False)
    for var in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_DIR", "GIT_WORK_TREE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    monkeypatch.chdir(checkout)
    return checkout


def test_experiments_stop_first_without_a_git_identity_and_say_how_to_set_one(checkout_without_git_identity,
                                                                              monkeypatch):
    """DVC commits each experiment: `make NAME` stops before anything runs, in one line with the two commands."""
    import subprocess

    from click.testing import CliRunner

    from raglab.experiments import runs
    from raglab.experiments.dvc import IDENTITY_HINT, require_git_identity

    result = CliRunner().invoke(runs.main, ["demo"])
    assert result.exit_code == 1
    assert result.output.splitlines() == ["Error: DVC experiments are git commits and git has no user.name: set your "
                                          f"identity for this checkout with {IDENTITY_HINT}"]
    # DVC reads the author and the committer from the environment too: half of that is not an identity
    monkeypatch.setenv("GIT_AUTHOR_NAME", "A"), monkeypatch.setenv("GIT_AUTHOR_EMAIL", "a@example.com")
    with pytest.raises(click.ClickException, match="no user.name"):
        require_git_identity()
    monkeypatch.setenv("GIT_COMMITTER_NAME", "A"), monkeypatch.setenv("GIT_COMMITTER_EMAIL", "a@example.com")
    require_git_identity()
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var)
    subprocess.run(["git", "config", "user.name", "A"], check=True)
    with pytest.raises(click.ClickException, match="no user.email"):
        require_git_identity()
    # the commands the message gives, run as given, are enough; they set the checkout's config only
    subprocess.run(IDENTITY_HINT, shell=True, check=True)
    require_git_identity()
    local = subprocess.run(["git", "config", "--local", "--get-regexp", "^user"], capture_output=True, text=True)
    assert local.stdout.splitlines() == ["user.name Your Name", "user.email you@example.com"]
    assert not (checkout_without_git_identity.parent / ".gitconfig").exists()


def test_written_params_are_what_the_experiment_reads(tmp_path, monkeypatch):
    """``--write-params``: the profiles, their ``$VARS`` and the ``-S`` values in one file for stages run by hand, the
    same params the experiment would read; a bad value writes nothing."""
    from click.testing import CliRunner

    from raglab.experiments import profiles
    from raglab.params.loader import load_params

    monkeypatch.setenv("MINILM_DIR", str(tmp_path / "minilm"))
    monkeypatch.chdir(REPO)
    out, sets = tmp_path / "params.yaml", ("build_embed_negatives.val_size=0.03", "own.questions.round_trip_top_k=null")
    args = ["cpu-minilm,own", "--write-params", str(out)] + [x for s in sets for x in ("-S", s)]
    result = CliRunner().invoke(profiles.main, args)
    assert result.exit_code == 0, result.output
    written = load_params(out)
    assert written == profiles.profile_params("cpu-minilm,own", sets)
    assert written.embedder.model == str(tmp_path / "minilm") and written.own.questions.round_trip_top_k is None
    assert written.build_embed_negatives.val_size == 0.03 and written.build_embed_negatives.split_by == "passage"

    # every form of -S that dvc's parser takes counts, a quoted "-S k=v" (one word) too: none is dropped
    forms = ["-S download.datasets.cmrc2018.splits=[validation]", "-Sdistill_cot.max_questions=0",
             "--set-param=build_embed_negatives.val_size=0.05", "--set-param", "own.questions.round_trip_top_k=null"]
    result = CliRunner().invoke(profiles.main, ["cpu-minilm,own", "--write-params", str(out)] + forms)
    assert result.exit_code == 0 and "4 -S values" in result.output, result.output
    written = load_params(out)
    assert written.download.datasets["cmrc2018"].splits == ["validation"] and written.distill_cot.max_questions == 0
    assert written.build_embed_negatives.val_size == 0.05 and written.own.questions.round_trip_top_k is None
    result = CliRunner().invoke(profiles.main, ["cpu-minilm", "--dry-run", "--queue"] + forms[:2])
    assert result.exit_code == 0, result.output
    assert result.output.split()[-5:] == ["--queue", "-S", "download.datasets.cmrc2018.splits=[validation]", "-S",
                                          "distill_cot.max_questions=0"]
    result = CliRunner().invoke(profiles.main, ["cpu-minilm", "--write-params", str(out), "-S"])
    assert result.exit_code != 0 and "-S needs a value" in result.output

    bad = tmp_path / "bad.yaml"
    result = CliRunner().invoke(profiles.main, ["cpu-minilm", "--write-params", str(bad), "-S",
                                                "build_embed_negatives.negatives=hardest"])
    assert result.exit_code != 0 and "hardest" in result.output and not bad.exists()
