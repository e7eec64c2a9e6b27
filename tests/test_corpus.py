"""The HDF5 corpus: pack_corpus, CorpusDataModule, the ``pack`` command and the corpus preset."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import pytest
import torch

from n2s_eds import Denoiser, InvalidInputError
from n2s_eds.cli import cli_main, main
from n2s_eds.data import (
    CORPUS_FORMAT,
    CorpusDataModule,
    CorpusPatchDataset,
    pack_corpus,
    read_corpus,
)
from n2s_eds.io import match_guide
from n2s_eds.models import PriorMixture
from n2s_eds.module import N2SModule
from n2s_eds.preprocess import energy_axis_kev, normalise_guide, processing_window
from n2s_eds.simulate import phantom

REPO = Path(__file__).resolve().parent.parent
#: Small phantoms: 80 eV channels from -0.1 keV (124 channels in the 0.2-20 keV window).
CH = {"n_channels": 128, "channel_width_ev": 80.0}
SHAPES = ((20, 18), (16, 22), (18, 18))


def _phantom(seed: int, shape=(18, 18), dose: float = 25.0, **kw):
    return phantom("tem", dose=dose, shape=shape, seed=seed, **{**CH, **kw})


@pytest.fixture(scope="module")
def phantoms():
    return [_phantom(seed, shape) for seed, shape in zip((11, 12, 13), SHAPES, strict=True)]


@pytest.fixture(scope="module")
def corpus(phantoms, tmp_path_factory) -> Path:
    """Three cubes of different scan shapes, with their HAADF images."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.h5"
    return pack_corpus(
        [(p.noisy, p.haadf) for p in phantoms], path, names=["a", "b", "c"], overwrite=True
    )


def _window_cube(signal) -> np.ndarray:
    """(E, Y, X) counts of the default processing window of a signal."""
    w = processing_window(signal)
    return np.moveaxis(np.asarray(signal.data)[..., w.slice], -1, 0)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix in (".h5", ".tmp")]


# --------------------------------------------------------------------------- pack


def test_pack_round_trip(corpus, phantoms):
    info = read_corpus(corpus)
    ref = phantoms[0].noisy
    energies = energy_axis_kev(ref)[processing_window(ref).slice]
    assert info.attrs["format"] == CORPUS_FORMAT and info.attrs["n_cubes"] == 3
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(corpus.stat().st_mode) == 0o666 & ~umask  # not private like mkstemp
    assert info.attrs["names"] == ["a", "b", "c"]
    assert info.n_channels == energies.size == 124
    assert info.attrs["energy_offset_kev"] == pytest.approx(energies[0])
    assert info.attrs["energy_scale_kev"] == pytest.approx(0.08)
    assert (info.attrs["low_kev"], info.attrs["high_kev"]) == (0.2, 20.0)
    with h5py.File(corpus, "r") as f:
        for cube, ph, shape in zip(info.cubes, phantoms, SHAPES, strict=True):
            g = f[cube.group]
            counts = g["counts"]
            assert cube.shape == counts.shape == (124, *shape)
            assert counts.dtype == ph.noisy.data.dtype  # integer counts stay integer
            np.testing.assert_array_equal(counts[()], _window_cube(ph.noisy))
            # chunks hold every channel of a square of pixels: a patch reads a few chunks
            assert counts.chunks[0] == 124 and counts.compression == "gzip"
            a = cube.attrs
            assert a["signal_class"] == "EDSTEMSpectrum" and a["signal_type"] == "EDS_TEM"
            assert a["elements"] == ["C", "Fe", "O", "Pt"]
            assert "Fe_Ka" in a["xray_lines"] and "Pt_La" in a["xray_lines"]
            assert a["beam_energy_kev"] == 200.0 and a["live_time"] == 0.5
            assert (a["window_low_kev"], a["window_high_kev"]) == (0.2, 20.0)
            assert a["energy_units"] == "keV" and a["source_channels"] == [4, 128]
            assert a["energy_offset_kev"] == pytest.approx(energies[0])
            assert a["energy_scale_kev"] == pytest.approx(0.08)
            assert a["scan_shape"] == list(shape) and a["scan_units"] == ["nm", "nm"]
            assert a["total_counts"] == pytest.approx(float(_window_cube(ph.noisy).sum()))
            assert cube.has_guide and a["has_guide"]
            guide = g["guide"][()]
            np.testing.assert_array_equal(guide, match_guide(ph.haadf, ph.noisy))
            med, spread = g["guide"].attrs["normalise_median"], g["guide"].attrs["normalise_spread"]
            np.testing.assert_allclose((guide - med) / spread, normalise_guide(guide), atol=1e-6)


def test_pack_files_with_the_command(phantoms, tmp_path, capsys):
    files = []
    for i, ph in enumerate(phantoms[:2]):
        files.append(tmp_path / f"scan{i}.hspy")
        ph.noisy.save(files[-1])
    out = tmp_path / "files.h5"
    assert main(["pack", str(out), *map(str, files)]) == 0
    assert "packed 2 cubes" in capsys.readouterr().err
    info = read_corpus(out)
    assert [c.name for c in info.cubes] == ["scan0", "scan1"]
    assert info.cubes[1].attrs["source"] == str(files[1])
    assert not info.cubes[0].has_guide  # a .hspy file holds no image of the scan
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["cubes/0001/counts"][()], _window_cube(phantoms[1].noisy))
    assert main(["pack", str(out), str(files[0])]) == 2  # exists: refused without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["pack", "--help"]) == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_offsets_by_whole_channels_and_narrower_windows(tmp_path):
    a = _phantom(1)
    b = _phantom(2, offset_kev=-0.02)  # one 80 eV channel higher: same channel energies
    c = _phantom(3, n_channels=100)  # ends at 7.82 keV: the corpus keeps the common channels
    with pytest.warns(UserWarning, match="channels"):
        path = pack_corpus([a.noisy, b.noisy, c.noisy], tmp_path / "c.h5")
    info = read_corpus(path)
    ea = energy_axis_kev(a.noisy)
    assert info.n_channels == 96
    for cube, ph in zip(info.cubes, (a, b, c), strict=True):
        start, stop = cube.attrs["source_channels"]
        assert energy_axis_kev(ph.noisy)[start] == pytest.approx(ea[4])  # 0.22 keV for all
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(
                f[cube.group]["counts"][()],
                np.moveaxis(np.asarray(ph.noisy.data)[..., start:stop], -1, 0),
            )


def test_small_calibration_differences_within_the_tolerance(tmp_path):
    a = _phantom(1)
    b = _phantom(2, channel_width_ev=80.2)  # 123 channels on: 0.01 + 0.31 channel apart
    with pytest.raises(InvalidInputError, match="0.32 channel apart"):
        pack_corpus([a.noisy, b.noisy], tmp_path / "c.h5")
    assert _leftovers(tmp_path) == []
    path = pack_corpus([a.noisy, b.noisy], tmp_path / "c.h5", energy_tolerance=0.5)
    info = read_corpus(path)
    assert info.attrs["energy_scale_kev"] == pytest.approx(0.08)  # the first cube's axis
    assert info.cubes[1].attrs["energy_scale_kev"] == pytest.approx(0.0802)  # its own
    assert info.cubes[1].attrs["source_channels"] == [4, 128]


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda tmp: [], "at least one source"),
        (lambda tmp: [_phantom(1).noisy, _phantom(2, channel_width_ev=50.0).noisy], "source 1"),
        (lambda tmp: [_phantom(1).noisy, _phantom(2, offset_kev=-0.07).noisy], "offset by"),
        (lambda tmp: [_phantom(1).noisy, tmp / "missing.hspy"], "missing.hspy"),
        (lambda tmp: [_phantom(1).noisy, _bad_file(tmp)], "notes.hspy"),
        (lambda tmp: [_phantom(1).noisy, _phantom(2).haadf], "source 1"),
    ],
    ids=["empty", "channel-width", "channel-offset", "missing-file", "bad-file", "not-a-cube"],
)
def test_refusals_write_nothing(make, needle, tmp_path):
    sources = make(tmp_path)
    out = tmp_path / "out.h5"
    with pytest.raises(InvalidInputError, match=needle):
        pack_corpus(sources, out)
    assert _leftovers(tmp_path) == []


def _bad_file(folder: Path) -> Path:
    path = folder / "notes.hspy"
    path.write_text("not a spectrum image")
    return path


def test_channel_width_refusal_names_both(tmp_path):
    with pytest.raises(InvalidInputError) as err:
        pack_corpus(
            [_phantom(1).noisy, _phantom(2, channel_width_ev=50.0).noisy],
            tmp_path / "x.h5",
            names=["good", "odd"],
        )
    assert "50 eV" in str(err.value) and "80 eV" in str(err.value)


def test_failure_while_writing_leaves_no_file(tmp_path, monkeypatch):
    import n2s_eds.data.corpus_pack as corpus_pack

    real = corpus_pack._write_cube
    calls = []

    def fail_on_second(group, src, *args):
        calls.append(src.name)
        if len(calls) == 2:
            raise OSError("disk full")
        real(group, src, *args)

    monkeypatch.setattr(corpus_pack, "_write_cube", fail_on_second)
    old = tmp_path / "keep.h5"
    old.write_bytes(b"previous corpus")
    with pytest.raises(InvalidInputError, match="disk full"):
        pack_corpus([_phantom(1).noisy, _phantom(2).noisy], old, overwrite=True)
    assert old.read_bytes() == b"previous corpus"  # the old file is untouched
    assert _leftovers(tmp_path) == [old]


def test_existing_output_refused(tmp_path):
    out = tmp_path / "c.h5"
    out.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="already exists"):
        pack_corpus([_phantom(1).noisy], out)
    assert out.read_bytes() == b"x"


# --------------------------------------------------------------------------- data module


class _ReadSpy:
    """Records the size of every h5py dataset read."""

    def __init__(self, monkeypatch):
        self.reads: list[tuple[str, int]] = []
        original = h5py.Dataset.__getitem__

        def spy(ds, sel):
            out = original(ds, sel)
            self.reads.append((ds.name, int(np.asarray(out).size)))
            return out

        monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)


def _find_window(cube: np.ndarray, patch: np.ndarray) -> list[tuple[int, int]]:
    """Every (y0, x0) where ``patch`` (E, py, px) equals the window of ``cube``."""
    _, py, px = patch.shape
    hits = []
    for y0 in range(cube.shape[1] - py + 1):
        for x0 in range(cube.shape[2] - px + 1):
            if np.array_equal(cube[:, y0 : y0 + py, x0 : x0 + px], patch):
                hits.append((y0, x0))
    return hits


def test_patches_are_read_by_slicing_from_the_right_places(corpus, phantoms, monkeypatch):
    dm = CorpusDataModule(
        str(corpus), use_guide=True, patch_size=8, batch_size=3, train_patches=12, val_patches=5
    )
    spy = _ReadSpy(monkeypatch)
    cubes = [_window_cube(p.noisy).astype(np.float32) for p in phantoms]
    guides = [normalise_guide(match_guide(p.haadf, p.noisy)) for p in phantoms]
    seen = set()
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
        batches = list(loader)
        assert len(batches) == (4 if split == "train" else 2)
        for batch in batches:
            counts, guide, k = batch["counts"], batch["guide"], batch["cube"]
            seen.add(k)
            assert counts.dtype == torch.float32 and counts.shape[1:3] == (1, 124)
            assert counts.shape[3:] == guide.shape[2:] and guide.shape[1] == 1
            ny = cubes[k].shape[1]
            held = int(np.ceil(0.1 * ny))
            for b in range(counts.shape[0]):
                patch = counts[b, 0].numpy()
                hits = _find_window(cubes[k], patch)
                assert hits, "a patch is not a window of its cube"
                y0, x0 = hits[0]
                py, px = patch.shape[1:]
                if split == "train":  # never the held-out bottom rows
                    assert y0 + py <= ny - held and py == px == 8
                else:
                    assert y0 >= ny - held and py == held
                np.testing.assert_allclose(
                    guide[b, 0].numpy(), guides[k][y0 : y0 + py, x0 : x0 + px], atol=1e-5
                )
    assert seen == {0, 1, 2}
    counts_reads = [n for name, n in spy.reads if name.endswith("/counts")]
    assert counts_reads and max(counts_reads) <= 124 * 8 * 8  # one patch per read, never a cube


def test_training_stream_is_seeded_and_worker_safe(corpus):
    def batches(workers: int, seed: int = 0) -> list[torch.Tensor]:
        dm = CorpusDataModule(
            str(corpus),
            patch_size=6,
            batch_size=2,
            train_patches=6,
            num_workers=workers,
            seed=seed,
        )
        return [b["counts"] for b in dm.train_dataloader()]

    ref = batches(0)
    assert all(torch.equal(a, b) for a, b in zip(ref, batches(1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(ref, batches(0, seed=1), strict=True))
    ds = CorpusDataModule(str(corpus), patch_size=6).train_dataloader().dataset
    assert isinstance(ds, CorpusPatchDataset)
    first = ds[5]["counts"]  # opens the file in this process
    clone = pickle.loads(pickle.dumps(ds))  # h5py handles are not pickled, but reopened
    assert torch.equal(clone[5]["counts"], first)


def test_adapt_data_is_a_bounded_mosaic(corpus, monkeypatch):
    dm = CorpusDataModule(str(corpus), use_guide=True, adapt_side=16, val_cubes=["c"])
    spy = _ReadSpy(monkeypatch)
    counts, guide = dm.adapt_data()
    # two training cubes, 16 // ceil(sqrt(2)) = 8 pixel squares side by side
    assert counts.shape == (124, 8, 16) and guide.shape == (8, 16)
    assert sum(n for name, n in spy.reads if name.endswith("/counts")) == counts.numel()
    assert {name for name, _ in spy.reads} == {
        "/cubes/0000/counts",
        "/cubes/0000/guide",
        "/cubes/0001/counts",
        "/cubes/0001/guide",
    }  # the held-out cube "c" takes no part
    region, _ = dm.adapt_cube(1)
    assert region.shape == (124, 16, 16)  # central 16 x 16 of the 16 x 22 scan


class _StateProbe(L.Callback):
    """Before each training step: which cube's state the network holds."""

    def __init__(self):
        self.cubes: list[int | None] = []
        self.match: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        dm = trainer.datamodule
        assert "cube" not in batch  # taken out before the step
        self.cubes.append(dm._current)
        state = dm._states.get(dm._current) if dm._current is not None else None
        basis = pl_module.net.basis
        self.match.append(state is not None and torch.equal(state["basis"], basis))


def _trainer(steps: int, callbacks=()) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )


def test_per_cube_adapt_state_follows_the_batches(corpus):
    dm = CorpusDataModule(str(corpus), patch_size=8, batch_size=2, train_patches=16, seed=3)
    module = N2SModule(PriorMixture(width=8, depth=2, max_rank=6))
    probe = _StateProbe()
    _trainer(8, [probe]).fit(module, datamodule=dm)
    assert len(set(probe.cubes)) >= 2 and all(probe.match)
    for k in dm._states:  # each cached state is the net adapted to that cube's centre
        ref = PriorMixture(max_rank=6)
        ref.adapt(dm.adapt_cube(k)[0])
        torch.testing.assert_close(dm._states[k]["basis"], ref.basis)
        torch.testing.assert_close(dm._states[k]["count_scale"], ref.count_scale)


def test_pooled_adapt_uses_the_mosaic(corpus):
    dm = CorpusDataModule(str(corpus), patch_size=8, batch_size=2, train_patches=4, adapt="pooled")
    module = N2SModule(PriorMixture(width=8, depth=2, max_rank=6))
    _trainer(2).fit(module, datamodule=dm)
    ref = PriorMixture(max_rank=6)
    ref.adapt(dm.adapt_data()[0])
    assert dm._states == {}
    torch.testing.assert_close(module.net.basis, ref.basis)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"val_cubes": ["zz"]}, "no cube 'zz'"),
        ({"val_cubes": ["a", "b", "0002"]}, "every cube"),
        ({"low_kev": 0.5}, "low_kev"),
        ({"adapt": "sometimes"}, "data.adapt"),
        ({"val_fraction": 0.9}, "val_fraction"),
    ],
)
def test_datamodule_refusals(corpus, kwargs, needle):
    with pytest.raises(InvalidInputError, match=needle):
        CorpusDataModule(str(corpus), **kwargs)


def test_datamodule_refuses_guides_it_lacks_and_non_corpus_files(tmp_path):
    path = pack_corpus([_phantom(1).noisy], tmp_path / "noguide.h5")
    with pytest.raises(InvalidInputError, match="no guide image: cube0"):
        CorpusDataModule(str(path), use_guide=True)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InvalidInputError, match="not an n2s_eds corpus"):
        CorpusDataModule(str(other))
    with pytest.raises(InvalidInputError, match="not found"):
        CorpusDataModule(str(tmp_path / "absent.h5"))


# --------------------------------------------------------------------------- preset, end to end


def test_corpus_preset_fits_and_denoises_an_unseen_cube(corpus, tmp_path):
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "corpus.yaml"),
        "--data.init_args.path",
        str(corpus),
        "--data.init_args.patch_size",
        "12",
        "--data.init_args.train_patches",
        "16",
        "--data.init_args.val_patches",
        "3",
        "--data.init_args.num_workers",
        "0",
        "--model.net.init_args.width",
        "8",
        "--model.net.init_args.depth",
        "2",
        "--model.optimizer.init_args.lr",
        "0.01",
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_steps",
        "8",
        "--trainer.val_check_interval",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.callbacks.init_args.every_n_train_steps",
        "4",
    ]
    cli = cli_main(args)
    assert type(cli.datamodule) is CorpusDataModule and cli.trainer.global_step == 8
    assert len(cli.datamodule._states) == 3  # every cube's state was used
    den = Denoiser.load(cli.model_file, progress=False, device="cpu")
    assert den.options["low_kev"] == 0.2 and den.options["high_kev"] == 20.0
    assert float(den.net.head.weight.detach().abs().sum()) > 0  # trained (the head starts at zero)
    unseen = _phantom(99, shape=(22, 20), dose=15.0)  # never in the corpus
    out = den.denoise(unseen.noisy)
    assert out.data.shape == unseen.noisy.data.shape
    w = processing_window(unseen.noisy).slice
    truth = np.asarray(unseen.truth.data)[..., w]
    mse_raw = np.mean((np.asarray(unseen.noisy.data)[..., w] - truth) ** 2)
    mse_den = np.mean((np.asarray(out.data)[..., w] - truth) ** 2)
    assert mse_den < 0.5 * mse_raw
    assert den.net.basis.shape[0] == truth.shape[-1]  # adapted to the unseen cube itself


def test_predict_with_a_corpus_says_what_to_do(corpus, tmp_path, capsys):
    rc = main(
        [
            "predict",
            "--config",
            str(REPO / "configs" / "corpus.yaml"),
            "--data.init_args.path",
            str(corpus),
            "--ckpt_path",
            str(tmp_path / "none.ckpt"),
            "--trainer.logger",
            "false",
        ]
    )
    assert rc == 2
    assert "n2s-eds denoise" in capsys.readouterr().err
