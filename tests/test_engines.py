"""DVC adopts a Snakemake run only where it reads the same params, in a DVC repository."""
from __future__ import annotations

import yaml

from eval.pipeline.engines import adopt


def test_nothing_is_adopted_outside_a_dvc_repository_or_for_other_params(tmp_path):
    params = {"preset": "smoke", "seeds": [0]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert adopt(["runs/x/metrics.json"], "params.yaml", params, tmp_path) == (
        "dvc: no DVC repository here (no .dvc/): nothing adopted")
    (tmp_path / ".dvc").mkdir()
    message = adopt(["runs/x/metrics.json"], "configs/smoke.yaml", {**params, "seeds": [0, 1]}, tmp_path)
    assert message == ("dvc: this run read configs/smoke.yaml, whose values differ from params.yaml's (what DVC "
                       "reads): its runs are not adopted into dvc.lock")
