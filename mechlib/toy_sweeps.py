"""Lesson 02's two large sweeps of toy models: trained once by `make toy-models`, shipped in data/toy_models/.

Together they take about 80 s on a 2-core CPU, most of a 90 s lesson, so the lesson loads them (set
TRAIN_HERE = True in the lesson to train them there instead; tests check that training gives the
shipped models):
- "phase": 2 features in 1 dimension over 7 densities x 7 relative importances, 6 starts each (the
  phase diagram);
- "dimensionality": 100 equally important features in 10 dimensions at 12 densities (the geometry).

    python -m mechlib.toy_sweeps [--out data/toy_models]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from mechlib.files import read_safetensors
from mechlib.loading import REPO_ROOT
from mechlib.toy_models import ToyConfig, ToyModel, train_toy_models

SHIPPED = REPO_ROOT / "data" / "toy_models"
SWEEPS = {"phase": dict(n_features=2, n_hidden=1, restarts=6, steps=1000),
          "dimensionality": dict(n_features=100, n_hidden=10, restarts=1, steps=1500)}


def phase_grid() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(density [7], relative importance [7], feature probability [49], importance [49, 2]): the phase
    diagram's configurations, density-major. Feature 0 has importance 1, the extra feature 1 the relative one."""
    relative_importance = torch.logspace(-1, 1, 7)  # 0.1 ... 10
    density = torch.logspace(0, -1.5, 7)  # 1 ... 0.03
    P, R = torch.meshgrid(density, relative_importance, indexing="ij")  # [density, importance] each
    return density, relative_importance, P.reshape(-1), torch.stack([torch.ones_like(R), R], dim=-1).reshape(-1, 2)


def dimensionality_grid() -> tuple[torch.Tensor, torch.Tensor]:
    """(density [12], importance [100]): the geometry sweep's configurations."""
    return torch.logspace(0, -1, 12), torch.ones(100)  # density 1 ... 0.1; all features equally important


def configurations(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature probability [config], importance) of sweep `name`."""
    if name == "phase":
        _, _, p, importance = phase_grid()
        return p, importance
    if name == "dimensionality":
        return dimensionality_grid()
    raise ValueError(f"unknown sweep {name!r}: choose one of {sorted(SWEEPS)}")


def train_sweep(name: str, progress: bool = True) -> ToyModel:
    """Train sweep `name` as the lesson would (seed 0): one instance per configuration, the best start kept."""
    p, importance = configurations(name)
    s = SWEEPS[name]
    model, _ = train_toy_models(s["n_features"], s["n_hidden"], p, importance, restarts=s["restarts"],
                                steps=s["steps"], progress=progress)
    return model


def toy_sweep(name: str, train_here: bool = False, directory: Path = SHIPPED) -> ToyModel:
    """Sweep `name`: trained here if train_here, else loaded from `directory` (what `make toy-models` saved)."""
    if train_here:
        return train_sweep(name)
    p, importance = configurations(name)
    path = Path(directory) / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: restore it with `git checkout -- data/toy_models`, retrain it "
                                f"with `make toy-models`, or set TRAIN_HERE = True to train the sweep in the lesson")
    tensors = read_safetensors(path)
    s = SWEEPS[name]
    model = ToyModel(ToyConfig(s["n_features"], s["n_hidden"], len(p)), p, importance)
    with torch.no_grad():
        model.W.copy_(tensors["W"])
        model.b_final.copy_(tensors["b_final"])
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mechlib.toy_sweeps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SHIPPED)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in SWEEPS:
        model = train_sweep(name)
        save_file({"W": model.W.detach().contiguous(), "b_final": model.b_final.detach().contiguous()},
                  str(args.out / f"{name}.safetensors"), metadata={k: str(v) for k, v in SWEEPS[name].items()})
        print(f"{name}: saved {args.out / f'{name}.safetensors'}")


if __name__ == "__main__":
    main()
