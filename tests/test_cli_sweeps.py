"""`mltrain sweeps list|show` (cli.py) over a real sweep on the local target."""

from __future__ import annotations

import json

from airflow_provider_mltrain import Experiment
from airflow_provider_mltrain.train.hyperdrive import BanditPolicy, RandomParameterSampling, choice
from tests.core.test_sweep import CURVES, sweep_config
from tests.test_cli import cli  # noqa: F401 - the fixture


def test_sweeps_list_and_show(workspace, make_tree, cli):  # noqa: F811
    src = make_tree({"train.py": CURVES})
    space = {"--quality": choice("good", "bad")}
    seed = next(
        s
        for s in range(1000)
        if [RandomParameterSampling(space).sample(i, s, [], True)["--quality"] for i in range(3)]
        == ["good", "bad", "good"]
    )
    config = sweep_config(
        src, RandomParameterSampling(space, seed=seed), 3, 1, policy=BanditPolicy(slack_factor=0.1)
    )
    sweep = Experiment(workspace, "exp").submit(config, run_id="s1")
    sweep.wait_for_completion(poll_interval=0.05)
    Experiment(workspace, "exp").submit(config.run_config)  # a plain run is not listed

    code, out, err = cli("sweeps", "list")
    assert (code, err) == (0, "")
    rows = out.splitlines()[1:]
    assert len(rows) == 1 and rows[0].split()[:4] == ["s1", "Completed", "3", "1"]
    assert "accuracy max" in rows[0] and "s1_0" in rows[0]

    code, out, _ = cli("sweeps", "show", "s1")
    assert code == 0
    assert "Policy      bandit" in out and "slack_factor=0.1" in out and "3 (1 stopped early)" in out
    assert "* s1_0" in out and "stopped: BanditPolicy" in out
    code, out, _ = cli("sweeps", "show", "s1", "--json")
    shown = json.loads(out)
    assert [c["run_id"] for c in shown["children"]][-1] == "s1_1"
    assert shown["children"][-1]["early_terminated"].startswith("BanditPolicy")
    assert shown["definition"]["seed"] == seed

    code, out, err = cli("sweeps", "show", "nope")
    assert code == 2
    code, _, err = cli("sweeps", "show", sweep.get_children()[0].id)
    assert code == 2 and "is not a sweep" in err
