"""One configuration schema for the CLI, the node's parameters, the YAML files and training.

A setting cannot be added without being documented (every field has a description), validated
(ranges, choices, types: bad values are refused naming their key), declared by the node (with
its description, range and read-only flag), listed in config/amodal3d.yaml and the README table
(both generated from the schema), and read somewhere in the package.
"""
from __future__ import annotations

import argparse
import ast
import math

import pytest
import yaml

from amodal3d_ros import cli
from amodal3d_ros.config import ConfigError, PipelineConfig
from amodal3d_ros.ros.settings import (PARAMETER_FILE, README, NodeSettings, parameter_file_text,
                                       readme_with_table)
from amodal3d_ros.schema import flatten, read_yaml, section_docs
from amodal3d_ros.train import command as train_command
from amodal3d_ros.train.config import TrainConfig

from conftest import EXAMPLE_SCENE, REPO

SCHEMAS = (NodeSettings, TrainConfig)  # the roots: the node's parameters (pipeline.* inside) and training


# ---------------------------------------------------------------------- documented
@pytest.mark.parametrize("root", SCHEMAS, ids=lambda c: c.__name__)
def test_every_setting_and_section_has_a_description(root):
    undocumented = [key for key, spec in root.settings().items() if not spec.doc.strip()]
    undocumented += [key for key, doc in section_docs(root).items() if not doc.strip()]
    assert not undocumented, f"declare these with setting(default, doc) / section(cls, doc): {undocumented}"


@pytest.mark.parametrize("root", SCHEMAS, ids=lambda c: c.__name__)
def test_defaults_are_valid(root):
    root().validate()  # types, ranges, choices and the cross-field rules of every section


def test_every_setting_is_read_somewhere_in_the_package():
    """A tripwire in the spirit of nvblox's parameter test: a setting whose name the package never
    reads (an attribute ``x.name``, a keyword ``name=`` or parameter, or the string 'name') is not wired."""
    used: set[str] = set()
    for path in (REPO / "amodal3d_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, (ast.keyword, ast.arg)):
                used.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.add(node.value)
    unread = [key for root in SCHEMAS for key, spec in root.settings().items() if spec.path[-1] not in used]
    assert not unread, f"declared but never read: {unread}"


# ---------------------------------------------------------------------- generated files
def test_parameter_file_is_generated_from_the_schema():
    assert PARAMETER_FILE.read_text() == parameter_file_text(), \
        "config/amodal3d.yaml is out of date: python -m amodal3d_ros.ros.settings --write"
    values = flatten(read_yaml(PARAMETER_FILE))
    defaults = NodeSettings().to_flat_dict()
    assert list(values) == list(defaults)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()} == defaults
    assert NodeSettings.from_params(values) == NodeSettings()
    assert PipelineConfig.from_yaml(PARAMETER_FILE) == PipelineConfig()  # --config takes a node parameter file


def test_readme_parameter_table_lists_every_parameter():
    readme = README.read_text()
    assert readme == readme_with_table(readme), \
        "the README's parameter table is out of date: python -m amodal3d_ros.ros.settings --write"
    for key in NodeSettings.settings():
        assert f"| `{key}` |" in readme, key


def test_demo_parameters_are_valid_differences_from_the_defaults():
    demo = flatten(read_yaml(REPO / "config" / "demo.yaml"))
    NodeSettings.from_params(demo)
    defaults = NodeSettings().to_flat_dict()
    assert demo and all(demo[key] != defaults[key] for key in demo), "demo.yaml repeats a default"


def test_train_recipe_reads_through_the_schema():
    recipe = TrainConfig.from_yaml(REPO / "config" / "train.yaml")
    assert recipe.data.views == (1, 4) and recipe.optim.steps == 10000 and recipe.fuse.voxels == 32


# ---------------------------------------------------------------------- one loader
def test_flat_nested_yaml_and_text_give_the_same_config(tmp_path):
    flat = PipelineConfig.from_flat_dict({"stereo.window": 7, "fuse.voxels": 48, "complete.symmetry": False})
    assert PipelineConfig.from_dict({"stereo": {"window": 7}, "fuse": {"voxels": 48},
                                     "complete": {"symmetry": False}}) == flat
    assert PipelineConfig().with_overrides(["stereo.window=7", "fuse.voxels=48", "complete.symmetry=false"]) == flat
    plain, ros = tmp_path / "plain.yaml", tmp_path / "ros.yaml"
    plain.write_text("stereo: {window: 7}\nfuse: {voxels: 48}\ncomplete: {symmetry: false}\n")
    ros.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"use_depth": False, "pipeline": {
        "stereo": {"window": 7}, "fuse": {"voxels": 48}, "complete": {"symmetry": False}}}}}))
    assert PipelineConfig.from_yaml(plain) == PipelineConfig.from_yaml(ros) == flat
    node = NodeSettings.from_dict(read_yaml(ros))
    assert node.pipeline == flat and node.use_depth is False


@pytest.mark.parametrize("values, key", [
    ({"fuse.voxels": 30}, "fuse.voxels"),
    ({"fuse.margin": "wide"}, "fuse.margin"),
    ({"stereo.near": 7.0}, "stereo.near"),  # against stereo.far
    ({"stereo.range_factors": (3.0,)}, "stereo.range_factors"),
    ({"complete.threshold": 1.0}, "complete.threshold"),  # an open bound
    ({"segment.method": "sam"}, "segment.sam_checkpoint"),
    ({"mesh.smooth_sigma": math.nan}, "mesh.smooth_sigma"),
    ({"complete.symmetry": "maybe"}, "complete.symmetry"),
    ({"fuse.voxel_count": 3}, "fuse.voxel_count"),
])
def test_bad_pipeline_values_are_refused_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        PipelineConfig.from_flat_dict(values)
    with pytest.raises(ConfigError, match=rf"pipeline\.{key.replace('.', '[.]')}"):
        NodeSettings.from_params({f"pipeline.{k}": v for k, v in values.items()})


def test_bad_node_values_are_all_named_at_once():
    with pytest.raises(ConfigError) as err:
        NodeSettings.from_params({"trigger.mode": "sometimes", "pipeline.fuse.voxels": 3, "keyframes.max": 0,
                                  "sync.tolerance": -1.0, "qos.reliable": 1, "no.such": 1})
    for key in ("trigger.mode", "pipeline.fuse.voxels", "keyframes.max", "sync.tolerance", "qos.reliable", "no.such"):
        assert key in str(err.value)
    with pytest.raises(ConfigError, match="world_frame must not be empty"):
        NodeSettings.from_params({"world_frame": " "})


def test_cli_set_and_config_reach_stereo_keys_and_refuse_bad_ones(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.add_pipeline_arguments(parser)
    (tmp_path / "c.yaml").write_text("stereo: {top_k: 3}\n")
    args = parser.parse_args(["--config", str(tmp_path / "c.yaml"), "--set", "stereo.window=7",
                              "--set", "stereo.range_factors=[0.3, 3]", "--method", "hull"])
    config = cli.pipeline_config(args)
    assert (config.stereo.top_k, config.stereo.window, config.stereo.range_factors) == (3, 7, (0.3, 3.0))
    assert config.complete.method == "hull"
    for bad, key in (("stereo.window=0", "stereo.window"), ("stereo.nope=1", "stereo.nope"),
                     ("fuse.voxels=many", "fuse.voxels")):
        assert cli.main(["reconstruct", str(EXAMPLE_SCENE), "--out", str(tmp_path / "out"), "--set", bad]) == 2
        err = capsys.readouterr().err
        assert key in err and err.count("\n") == 1, err


def test_the_pipeline_hands_its_stereo_settings_to_stereo(monkeypatch):
    from amodal3d_ros import stereo
    from amodal3d_ros.pipeline import Reconstructor

    seen = []

    def complete_depth(frames, poses, config=None):
        seen.append(config)
        raise RuntimeError("stop here")

    monkeypatch.setattr(stereo, "complete_depth", complete_depth)
    reconstructor = Reconstructor(PipelineConfig.from_flat_dict({"device": "cpu", "complete.method": "hull",
                                                                 "stereo.window": 5}))
    with pytest.raises(RuntimeError, match="stop here"):
        reconstructor._segment_rgb_only([], [], [], [])
    assert seen[0].window == 5


def test_train_set_reaches_training_keys(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["--config", str(REPO / "config" / "train.yaml"), "--set", "optim.steps=5",
                              "--set", "data.views=1,2", "--set", "data.procedural_share=0.5", "--scenes", "4"])
    config = train_command.config_from_args(args)
    assert (config.optim.steps, config.data.views, config.data.procedural_share, config.data.scenes) == \
        (5, (1, 2), 0.5, 4)
    assert config.data.thicken == 0.3  # the rest of the recipe stays
    for bad, key in (("optim.lr=-1", "optim.lr"), ("data.views=4,1", "data.views"), ("data.split=test", "data.split"),
                     ("fuse.voxels=12", "fuse.voxels"), ("optim.nope=1", "optim.nope")):
        assert cli.main(["train", "--config", str(REPO / "config" / "train.yaml"), "--set", bad]) == 2
        assert key in capsys.readouterr().err


# ---------------------------------------------------------------------- the node declares the schema
@pytest.fixture
def ros_context():
    rclpy = pytest.importorskip("rclpy")
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def make_node(context, **kwargs):
    from amodal3d_ros.ros.node import Amodal3dNode

    return Amodal3dNode(reconstructor_factory=lambda config: None, context=context, namespace="/schema_test",
                        **kwargs)


def test_node_declares_every_parameter_with_its_descriptor(ros_context):
    node = make_node(ros_context)
    try:
        schema = NodeSettings.settings()
        declared = set(node.list_parameters([], 0).names) - {"use_sim_time", "start_type_description_service"}
        assert declared == set(schema)
        for spec, descriptor in zip(schema.values(), node.describe_parameters(list(schema))):
            assert descriptor.description == spec.doc, spec.key
            assert descriptor.read_only == spec.read_only, spec.key
            assert descriptor.additional_constraints == spec.constraint(), spec.key
            if spec.range is not None and spec.kind is int:
                (bounds,) = descriptor.integer_range
                assert (bounds.from_value, bounds.step) == (spec.range.low, spec.range.step), spec.key
            if spec.range is not None and spec.kind is float:
                (bounds,) = descriptor.floating_point_range
                assert bounds.from_value == (spec.range.low if spec.range.low is not None else -math.inf), spec.key
        assert NodeSettings.from_params(node._parameter_values()) == NodeSettings()  # read back as declared
    finally:
        node.destroy_node()


def test_node_validates_parameters_through_the_schema(ros_context):
    from rclpy.parameter import Parameter

    node = make_node(ros_context)
    try:
        ok = node.set_parameters([Parameter("pipeline.stereo.window", value=7), Parameter("keyframes.min_rotation",
                                                                                       value=20)])
        assert all(r.successful for r in ok)
        assert node.settings.pipeline.stereo.window == 7 and node.settings.keyframes.min_rotation == 20.0
        for name, value in (("pipeline.stereo.near", 7.0), ("keyframes.min_rotation", "wide"),
                            ("pipeline.complete.threshold", 1.0), ("save_root", "/tmp")):
            (result,) = node.set_parameters([Parameter(name, value=value)])
            assert not result.successful and name in result.reason, (name, result.reason)
        assert node.settings.pipeline.stereo.near == PipelineConfig().stereo.near
    finally:
        node.destroy_node()


@pytest.mark.parametrize("name, value", [("keyframes.max", 0), ("pipeline.stereo.near", 7.0),
                                         ("pipeline.fuse.voxels", "many")])
def test_bad_start_up_parameters_are_refused_naming_them(ros_context, name, value):
    from rclpy.parameter import Parameter

    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        make_node(ros_context, parameter_overrides=[Parameter(name, value=value)])
