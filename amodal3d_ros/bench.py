"""``amodal3d bench``: stage timings of the pipeline (medians over repeats), printed and as JSON.

Timings on shared machines are noisy: medians over several repeats, and ratios between methods
on the same machine in the same run, are what to compare. ``--node`` benchmarks the ROS node on a
live RGB-D stream instead (frames received, synchronised and dropped; ``ros/tools/stream_bench.py``).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .cli import add_pipeline_arguments, pipeline_config
from .complete import make_completer
from .ros.tools import stream_bench
from .scene import read_scene


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenes", type=Path, nargs="*", help="scene folders to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="hull,learned", help="completion methods to time")
    parser.add_argument("--json", type=Path, help="where to write the figures (default: build/bench.json, "
                        "with --node build/bench_node.json)")
    add_pipeline_arguments(parser)
    stream_bench.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.node:
        args.json = args.json or Path("build/bench_node.json")
        return stream_bench.run(args)
    if not args.scenes:
        raise ValueError("name the scene folders to time (or --node for the ROS node on a live stream)")
    args.json = args.json or Path("build/bench.json")
    import torch

    from .pipeline import Reconstructor

    config = pipeline_config(args)
    reconstructor = Reconstructor(config)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    completers = {m: make_completer(replace(config.complete, method=m), reconstructor.device) for m in methods}
    figures = {"device": reconstructor.device, "torch_threads": torch.get_num_threads(),
               "cuda": torch.cuda.get_device_name(0) if reconstructor.device.startswith("cuda") else None,
               "machine": platform.processor() or platform.machine(), "resolution": config.complete.resolution,
               "scenes": {}}
    for folder in args.scenes:
        scene = read_scene(folder)
        prepare, complete = [], {m: [] for m in methods}
        per_object, evidence_to_mesh = {m: [] for m in methods}, {m: [] for m in methods}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            prepared = reconstructor.prepare(scene.frames, scene.targets, scene.world_frame)
            prepare.append(time.perf_counter() - t0)
            for m, completer in completers.items():
                t1 = time.perf_counter()
                result = reconstructor.complete(prepared, completer)
                complete[m].append(time.perf_counter() - t1)
                per_object[m] += [o.seconds for o in result.objects]
                for evidence in prepared.evidence.values():
                    t2 = time.perf_counter()
                    reconstructor.mesh_evidence(evidence, completer)
                    evidence_to_mesh[m].append(time.perf_counter() - t2)
        entry = {"views": len(scene.frames), "objects": len(prepared.evidence),
                 "prepare_median_s": float(np.median(prepare))}
        for m in methods:
            entry[f"{m}_complete_median_s"] = float(np.median(complete[m]))
            entry[f"{m}_per_object_median_s"] = float(np.median(per_object[m])) if per_object[m] else None
            entry[f"{m}_evidence_to_mesh_median_s"] = (float(np.median(evidence_to_mesh[m]))
                                                       if evidence_to_mesh[m] else None)
        figures["scenes"][folder.name] = entry
        print(f"{folder.name}: views={entry['views']} objects={entry['objects']} "
              f"prepare={entry['prepare_median_s']:.2f}s " +
              " ".join(f"{m}={entry[f'{m}_per_object_median_s'] or float('nan'):.3f}s/object "
                       f"(evidence->mesh {entry[f'{m}_evidence_to_mesh_median_s'] or float('nan'):.3f}s)"
                       for m in methods))
    if len(methods) > 1:
        base = methods[0]
        for m in methods[1:]:
            ratios = [e[f"{m}_per_object_median_s"] / e[f"{base}_per_object_median_s"]
                      for e in figures["scenes"].values()
                      if e[f"{m}_per_object_median_s"] and e[f"{base}_per_object_median_s"]]
            if ratios:
                figures[f"ratio_{m}_over_{base}"] = float(np.median(ratios))
                print(f"median per-object time ratio {m}/{base}: {figures[f'ratio_{m}_over_{base}']:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1))
    print(f"figures written to {args.json}")
    return 0
