"""The output of a survey prediction: an MDIO (v1) / zarr dataset written block by block.

The dataset has the survey's axes as coordinates (``inline``, ``crossline``, ``time`` or ``depth``, and
``cdp_x`` / ``cdp_y`` when the input had them), its ``trace_mask`` and one float32 (probabilities) or
uint8 (0/1 mask) variable per output, chunked (block, block, samples) so that a block of whole inlines
(or crosslines) covers whole chunks: Dask workers write their blocks at the same time without a lock, and
reading inline blocks of a crossline pass touches only the chunks needed. The top-level attributes
follow MDIO v1 (``apiVersion``, ``name``, ``attributes.defaultVariableName``), so ``mdio.open_mdio`` and
``xarray.open_zarr`` open it.

While it is written the dataset lives in ``OUT.partial`` (with a plan and one marker per finished
block under ``.saltseg/``); it is renamed to ``OUT`` when every block is there, so a killed run never
leaves a half-written ``OUT`` and ``--resume`` continues from the blocks already written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saltseg.errors import DataError
from saltseg.volume.survey import Axis3D, Survey

__all__ = ["OutputStore", "Variable"]

STATE_DIR = ".saltseg"
KIND = "volume-prediction"  # the marker of a store saltseg made


@dataclass(frozen=True)
class Variable:
    """One output variable: its name, dtype and the axis whose blocks write it."""

    name: str
    dtype: str  # "float32" or "uint8"
    axis: Axis3D


class OutputStore:
    """``OUT`` and its working copy ``OUT.partial`` (see the module docstring)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")

    @property
    def state(self) -> Path:
        return self.partial / STATE_DIR

    def _marker(self, variable: str, start: int) -> Path:
        return self.state / "done" / f"{variable}-{start}"

    def check_new(self, resume: bool) -> None:
        """Refuse to replace anything saltseg did not make; without ``resume`` a partial store is an error."""
        if self.out.exists():
            raise DataError("the output exists; choose a new --out (saltseg never replaces it)", self.out)
        if self.partial.exists() and not resume:
            raise DataError(
                "an unfinished prediction is there; give --resume to continue it, or remove it", self.partial
            )
        kind = self.state / "kind"
        if self.partial.exists() and (not kind.is_file() or kind.read_text().strip() != KIND):
            raise DataError(
                "the folder was not made by saltseg volume predict; it is left untouched", self.partial
            )

    def create(
        self,
        survey: Survey,
        variables: list[Variable],
        blocks: dict[str, int],
        plan: dict,
        attrs: dict,
        resume: bool,
    ) -> None:
        """Create the empty dataset in ``OUT.partial``, every variable chunked ``(blocks["inline"],
        blocks["crossline"], samples)`` (or, with ``resume``, check that the one there was planned the same
        way)."""
        plan_file = self.state / "plan.json"
        if self.partial.exists():
            try:
                earlier = json.loads(plan_file.read_text())
            except (OSError, ValueError):
                earlier = None
            if earlier != plan:
                raise DataError(
                    "the unfinished prediction there was started with other inputs or options; remove it or "
                    "give the same ones",
                    self.partial,
                )
            return
        import dask.array as da
        import xarray as xr

        ni, nx, ns = survey.shape
        coords: dict = {
            "inline": ("inline", survey.ilines),
            "crossline": ("crossline", survey.xlines),
            survey.sample_dim: (survey.sample_dim, survey.samples),
        }
        for name, values in survey.coords.items():
            coords[name] = (("inline", "crossline"), values)
        data_vars: dict = {"trace_mask": (("inline", "crossline"), survey.live)}
        encoding: dict = {}
        dims = ("inline", "crossline", survey.sample_dim)
        for v in variables:
            chunks = tuple(
                min(c, n)
                for c, n in zip((blocks["inline"], blocks["crossline"], ns), (ni, nx, ns), strict=True)
            )
            data_vars[v.name] = (dims, da.zeros((ni, nx, ns), dtype=v.dtype, chunks=chunks))
            encoding[v.name] = {"chunks": chunks}
            if v.dtype == "uint8":
                encoding[v.name]["fill_value"] = 0
        ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        ds.to_zarr(
            self.partial, mode="w-", compute=False, encoding=encoding, consolidated=False, zarr_format=3
        )
        (self.state / "done").mkdir(parents=True)
        (self.state / "kind").write_text(KIND + "\n")
        plan_file.write_text(json.dumps(plan, indent=1))

    def is_done(self, variable: str, start: int) -> bool:
        return self._marker(variable, start).exists()

    def write(self, variable: Variable, start: int, data: np.ndarray) -> None:
        """Write the block of sections starting at ``start`` (covering whole chunks), then mark it done."""
        import zarr

        arr = zarr.open_array(self.partial / variable.name, mode="r+")
        stop = start + data.shape[0 if variable.axis == "inline" else 1]
        if variable.axis == "inline":
            arr[start:stop] = data
        else:
            arr[:, start:stop] = data
        self._marker(variable.name, start).write_text("")

    def read(self, variable: str, axis: Axis3D, start: int, stop: int) -> np.ndarray:
        """A block of an output variable written earlier."""
        import zarr

        arr = zarr.open_array(self.partial / variable, mode="r")
        return np.asarray(arr[start:stop] if axis == "inline" else arr[:, start:stop])

    def drop(self, variable: str) -> None:
        """Remove an intermediate variable (a per-axis pass after fusion) from the dataset."""
        import zarr

        group = zarr.open_group(self.partial, mode="r+")
        if variable in group:
            del group[variable]

    def discard(self) -> None:
        """Remove ``OUT.partial`` (made by saltseg: it carries the marker)."""
        if (self.state / "kind").exists():
            shutil.rmtree(self.partial)

    def finish(self) -> Path:
        """Remove the working state and rename ``OUT.partial`` to ``OUT``."""
        shutil.rmtree(self.state)
        self.partial.rename(self.out)
        return self.out
