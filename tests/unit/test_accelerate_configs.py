"""The ready-made Accelerate configs parse with Accelerate's own loader and use only the keys
its launcher knows (accelerate 1.15)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType

FOLDER = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
EXPECTED = {  # file -> (distributed type, processes, CPU)
    "cpu-2proc.yaml": (DistributedType.MULTI_GPU, 2, True),
    "gpu-single.yaml": (DistributedType.NO, 1, False),
    "gpu-ddp.yaml": (DistributedType.MULTI_GPU, 2, False),
    "gpu-fsdp.yaml": (DistributedType.FSDP, 2, False),
    "gpu-deepspeed-zero2.yaml": (DistributedType.DEEPSPEED, 2, False),
}


def launcher_options() -> set[str]:
    return {a.dest for a in launch_command_parser()._actions}


def test_every_config_is_listed() -> None:
    assert sorted(p.name for p in FOLDER.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_with_accelerate(name: str) -> None:
    config = load_config_from_file(str(FOLDER / name))  # unknown top-level keys raise here
    assert isinstance(config, ClusterConfig)
    kind, processes, cpu = EXPECTED[name]
    assert config.distributed_type == kind
    assert config.num_processes == processes and config.use_cpu is cpu
    assert config.mixed_precision == "no"  # polytask's train.mixed_precision decides
    raw = yaml.safe_load((FOLDER / name).read_text())
    options = launcher_options()
    for section in ("fsdp_config", "deepspeed_config"):
        for key in raw.get(section) or {}:
            assert key in options, f"{name}: {section}.{key} is not an accelerate launch option"
    if kind == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if kind == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == 2
