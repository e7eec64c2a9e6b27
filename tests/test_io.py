"""Tests of n2s_eds.io: loading real files, pairing the guide, validation, atomic save."""

from __future__ import annotations

import warnings
from pathlib import Path

import exspy
import hyperspy.api as hs
import numpy as np
import pytest
from conftest import require_data

from n2s_eds.exceptions import InvalidInputError
from n2s_eds.io import (
    Acquisition,
    NonIntegerCountsWarning,
    check_spectrum_image,
    load,
    load_guide,
    match_guide,
    save,
)


def make_cube(
    shape: tuple[int, int, int] = (12, 11, 64), lam: float = 1.0
) -> exspy.signals.EDSTEMSpectrum:
    """A small seeded Poisson spectrum image with calibrated axes."""
    s = exspy.signals.EDSTEMSpectrum(np.random.default_rng(0).poisson(lam, shape))
    for ax, name in zip(s.axes_manager.navigation_axes, ("x", "y"), strict=True):
        ax.name, ax.units, ax.scale, ax.offset = name, "nm", 0.5, 1.0
    e = s.axes_manager.signal_axes[0]
    e.name, e.units, e.scale, e.offset = "Energy", "keV", 0.02, 0.16
    return s


def make_image(shape: tuple[int, int], scale: float, offset: float, units: str = "nm"):
    """A Signal2D whose value is its x coordinate plus 100 times its y coordinate."""
    ny, nx = shape
    x = offset + scale * np.arange(nx)
    y = offset + scale * np.arange(ny)
    img = hs.signals.Signal2D(x[None, :] + 100.0 * y[:, None])
    for ax in img.axes_manager.signal_axes:
        ax.units, ax.scale, ax.offset = units, scale, offset
    return img


# --------------------------------------------------------------------------- real files

REAL = [
    # name, class, data shape, image shape
    ("fept_core_shell_tem", "EDSTEMSpectrum", (64, 64, 992), None),
    ("bruker_sem_30x30_highcount", "EDSSEMSpectrum", (30, 30, 2048), (30, 30)),
    ("bruker_sem_50x50", "EDSSEMSpectrum", (50, 50, 2048), (50, 50)),
    ("bruker_stem_haadf_lowcount", "EDSTEMSpectrum", (64, 64, 2048), (64, 64)),
    ("sio2_particles_stem_haadf", "EDSTEMSpectrum", (128, 128, 2048), None),
    ("velox_20frames", "EDSTEMSpectrum", (50, 10, 4096), (50, 10)),
    ("velox_4detectors", "EDSTEMSpectrum", (16, 16, 4096), (16, 16)),
]


@pytest.mark.data
@pytest.mark.parametrize(("name", "cls", "shape", "image"), REAL, ids=[r[0] for r in REAL])
def test_load_real_files(name, cls, shape, image):
    acq = load(require_data(name))
    assert isinstance(acq, Acquisition)
    assert type(acq.eds).__name__ == cls
    assert acq.eds.axes_manager.navigation_dimension == 2
    assert acq.eds.data.shape == shape
    assert acq.eds.metadata.Signal.signal_type.startswith("EDS")
    if image is None:
        assert acq.haadf is None
    else:
        assert acq.haadf is not None
        assert acq.haadf.data.shape == image
        guide = match_guide(acq.haadf, acq.eds)
        assert guide.shape == shape[:2] and guide.dtype == np.float32
    check_spectrum_image(acq.eds)


@pytest.mark.data
def test_load_keeps_axes_as_hyperspy_loads_them():
    path = require_data("bruker_stem_haadf_lowcount")
    ref = [s for s in hs.load(path) if s.axes_manager.signal_dimension == 1][0]
    eds = load(path).eds
    for a, b in zip(eds.axes_manager._axes, ref.axes_manager._axes, strict=True):
        assert (a.name, a.size, a.scale, a.offset, a.units) == (
            b.name,
            b.size,
            b.scale,
            b.offset,
            b.units,
        )
    assert eds.data.dtype == ref.data.dtype
    np.testing.assert_array_equal(eds.data, ref.data)
    md, md_ref = eds.metadata.as_dictionary(), ref.metadata.as_dictionary()
    for d in (md, md_ref):
        d["General"].pop("FileIO", None)  # load timestamps
    assert md == md_ref


@pytest.mark.data
def test_load_bruker_50x50_picks_scan_image_not_overview():
    acq = load(require_data("bruker_sem_50x50"))
    assert acq.haadf.data.shape == (50, 50)
    # The reader gives the image its own x pixel size (7.8 % off the cube's): still paired.
    assert match_guide(acq.haadf, acq.eds).shape == (50, 50)


@pytest.mark.data
def test_load_velox_detector_and_frames():
    path = require_data("velox_4detectors")
    summed = load(path).eds
    one = load(path, detector=1)
    assert one.eds.axes_manager.navigation_dimension == 2
    assert one.eds.data.shape == summed.data.shape
    assert 0 < one.eds.data.sum() < summed.data.sum()
    assert one.haadf is not None
    with pytest.raises(InvalidInputError, match="out of range"):
        load(path, detector=4)
    with pytest.raises(InvalidInputError, match="detector="):
        load(path, sum_EDS_detectors=False)
    frames = load(path, sum_frames=False).eds
    assert frames.axes_manager.navigation_dimension == 3
    assert frames.data.shape == (2, 16, 16, 4096)
    with pytest.raises(InvalidInputError, match="sum_frames=True"):
        check_spectrum_image(frames)


@pytest.mark.data
def test_load_lazy_real_file():
    acq = load(require_data("bruker_sem_30x30_highcount"), lazy=True)
    assert acq.eds._lazy and type(acq.eds).__name__ == "LazyEDSSEMSpectrum"
    assert acq.haadf is not None
    check_spectrum_image(acq.eds)


@pytest.mark.data
def test_sio2_pair_and_load_guide():
    eds = load(require_data("sio2_particles_stem_haadf")).eds
    assert eds.axes_manager.signal_axes[0].units == "keV"
    image_path = require_data("sio2_particles_stem_haadf_image")
    guide = load_guide(image_path, eds)
    assert guide.data.shape == (128, 128)
    assert load_guide(guide, eds) is guide
    assert match_guide(guide, eds).shape == (128, 128)
    with pytest.raises(InvalidInputError, match="no EDS spectrum image"):
        load(image_path)
    small = load(require_data("bruker_stem_haadf_lowcount")).eds
    with pytest.raises(InvalidInputError, match="does not cover"):
        load_guide(image_path, small)


# --------------------------------------------------------------------------- load errors


def test_load_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="file not found"):
        load(tmp_path / "nope.hspy")


def test_load_unreadable_file(tmp_path):
    bad = tmp_path / "broken.hspy"
    bad.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(InvalidInputError, match="could not read"):
        load(bad)


def test_load_file_without_spectrum_image(tmp_path):
    path = tmp_path / "image.hspy"
    hs.signals.Signal2D(np.ones((12, 11))).save(path)
    with pytest.raises(InvalidInputError, match="no EDS spectrum image"):
        load(path)


def test_load_sets_missing_signal_type(tmp_path):
    path = tmp_path / "untyped.hspy"
    s = hs.signals.Signal1D(np.random.default_rng(0).poisson(1, (12, 11, 64)))
    s.save(path)
    eds = load(path).eds
    assert isinstance(eds, exspy.signals.EDSTEMSpectrum)
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    s.save(path, overwrite=True)
    assert isinstance(load(path).eds, exspy.signals.EDSSEMSpectrum)


def test_load_detector_out_of_range_single_cube(tmp_path):
    path = save(make_cube(), tmp_path / "cube.hspy")
    assert load(path, detector=0).eds.data.shape == (12, 11, 64)
    with pytest.raises(InvalidInputError, match="out of range"):
        load(path, detector=1)


# --------------------------------------------------------------------------- save


def _with_metadata(s):
    s.set_microscope_parameters(beam_energy=200.0, live_time=1.5)
    s.add_elements(["Fe", "O"])
    s.add_lines(["Fe_La", "O_Ka"])
    return s


def test_save_round_trip(tmp_path):
    s = _with_metadata(make_cube())
    out = save(s, tmp_path / "cube.hspy")
    assert out == (tmp_path / "cube.hspy").resolve() and out.exists()
    back = load(out).eds
    assert type(back) is type(s)
    for a, b in zip(back.axes_manager._axes, s.axes_manager._axes, strict=True):
        assert (a.name, a.size, a.scale, a.offset, a.units) == (
            b.name,
            b.size,
            b.scale,
            b.offset,
            b.units,
        )
    md = back.metadata
    assert list(md.Sample.elements) == ["Fe", "O"]
    assert list(md.Sample.xray_lines) == ["Fe_La", "O_Ka"]
    assert md.Acquisition_instrument.TEM.Detector.EDS.live_time == 1.5
    assert md.Acquisition_instrument.TEM.beam_energy == 200.0
    np.testing.assert_array_equal(back.data, s.data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.hspy"]


def test_save_lazy_and_default_extension(tmp_path):
    out = save(make_cube().as_lazy(), tmp_path / "cube")
    assert out.name == "cube.hspy"
    np.testing.assert_array_equal(load(out).eds.data, make_cube().data)


def test_save_refuses_overwrite(tmp_path):
    target = tmp_path / "cube.hspy"
    target.write_bytes(b"keep me")
    with pytest.raises(InvalidInputError, match="overwrite=True"):
        save(make_cube(), target)
    assert target.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.hspy"]
    save(make_cube(), target, overwrite=True)
    assert load(target).eds.data.shape == (12, 11, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.hspy"]


def test_save_rejects_non_signal(tmp_path):
    with pytest.raises(InvalidInputError, match="HyperSpy signals"):
        save(np.ones((3, 3)), tmp_path / "a.hspy")


@pytest.mark.parametrize("existing", [False, True])
def test_save_is_atomic(tmp_path, monkeypatch, existing):
    import rsciio.hspy

    def broken_writer(filename, signal, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(rsciio.hspy, "file_writer", broken_writer)
    target = tmp_path / "cube.hspy"
    if existing:
        target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="disk full"):
        save(make_cube(), target, overwrite=True)
    if existing:
        assert target.read_bytes() == b"old content"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.hspy"]
    else:
        assert not target.exists()
        assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- validation


def test_check_accepts_valid_cube():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_spectrum_image(make_cube())
        cube = make_cube()
        cube.change_dtype("float32")  # integer-valued floats are counts too
        check_spectrum_image(cube, strict=True)
        check_spectrum_image(make_cube(shape=(10, 10, 8)))


def test_check_not_a_signal():
    with pytest.raises(InvalidInputError, match="expected a HyperSpy signal"):
        check_spectrum_image(np.ones((12, 11, 64)))


def test_check_single_spectrum():
    with pytest.raises(InvalidInputError, match="single spectrum"):
        check_spectrum_image(make_cube().inav[0, 0])


def test_check_image_given_as_cube():
    with pytest.raises(InvalidInputError, match="signal axes"):
        check_spectrum_image(hs.signals.Signal2D(np.ones((12, 11))))


def test_check_line_scan():
    with pytest.raises(InvalidInputError, match="one\\s+navigation axis"):
        check_spectrum_image(make_cube().inav[:, 0])


def test_check_extra_navigation_axis():
    s = exspy.signals.EDSTEMSpectrum(np.random.default_rng(0).poisson(1, (3, 12, 11, 64)))
    with pytest.raises(InvalidInputError, match="3 navigation axes") as info:
        check_spectrum_image(s)
    message = str(info.value)
    assert "signal.sum(" in message and "inav[..., i]" in message and "sum_frames=True" in message


def test_check_non_uniform_energy_axis():
    s = make_cube()
    s.axes_manager.signal_axes[0].convert_to_non_uniform_axis()
    with pytest.raises(InvalidInputError, match="not uniform"):
        check_spectrum_image(s)


def test_check_small_scan():
    with pytest.raises(InvalidInputError, match="padded and accepted") as info:
        check_spectrum_image(make_cube(shape=(9, 20, 16)))
    assert "9 x 20" in str(info.value)
    check_spectrum_image(make_cube(shape=(9, 20, 16)), min_size=8)


def _float_cube():
    s = make_cube()
    s.change_dtype("float32")
    return s


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_non_finite(lazy, bad):
    s = _float_cube()
    s.data[3, 4, 5] = bad
    with pytest.raises(InvalidInputError, match="NaN/inf"):
        check_spectrum_image(s.as_lazy() if lazy else s)


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_check_negative(lazy):
    s = _float_cube()
    s.data[1, 2, 3] = -1
    with pytest.raises(InvalidInputError, match="negative"):
        check_spectrum_image(s.as_lazy() if lazy else s)
    s = make_cube()
    s.change_dtype("int16")
    s.data[0, 0, 0] = -2
    with pytest.raises(InvalidInputError, match="negative"):
        check_spectrum_image(s.as_lazy() if lazy else s)


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_check_all_zero(lazy):
    s = exspy.signals.EDSTEMSpectrum(np.zeros((12, 11, 64), dtype=np.uint16))
    with pytest.raises(InvalidInputError, match="all zeros"):
        check_spectrum_image(s.as_lazy() if lazy else s)


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_check_non_integer_warns_or_raises(lazy):
    s = _float_cube()
    s.data[2, 2, 2] += 0.5
    s = s.as_lazy() if lazy else s
    with pytest.warns(NonIntegerCountsWarning, match="non-integer"):
        check_spectrum_image(s)
    with pytest.raises(InvalidInputError, match="non-integer"):
        check_spectrum_image(s, strict=True)
    assert issubclass(NonIntegerCountsWarning, UserWarning)


def test_check_complex_dtype():
    s = hs.signals.ComplexSignal1D(np.ones((12, 11, 8), dtype=complex))
    with pytest.raises(InvalidInputError, match="complex"):
        check_spectrum_image(s)


def test_check_lazy_keeps_signal_lazy():
    s = make_cube().as_lazy()
    s.data = s.data.rechunk((4, 4, 64))
    check_spectrum_image(s)
    assert s._lazy


# --------------------------------------------------------------------------- match_guide


def test_match_guide_same_grid_signal_and_array():
    eds = make_cube()
    img = make_image((12, 11), 0.5, 1.0)
    out = match_guide(img, eds)
    assert out.dtype == np.float32 and out.shape == (12, 11)
    np.testing.assert_array_equal(out, img.data.astype(np.float32))
    arr = np.arange(12 * 11, dtype=np.uint16).reshape(12, 11)
    np.testing.assert_array_equal(match_guide(arr, eds), arr.astype(np.float32))


def test_match_guide_array_wrong_shape():
    with pytest.raises(InvalidInputError, match=r"\(11, 12\).*\(12, 11\)"):
        match_guide(np.ones((11, 12)), make_cube())


def test_match_guide_resamples_same_area():
    eds = make_cube()  # pixel centres 1.0 ... in steps of 0.5 nm
    fine = make_image((24, 22), 0.25, 0.875)  # twice finer, same area
    out = match_guide(fine, eds)
    expected = make_image((12, 11), 0.5, 1.0).data
    np.testing.assert_allclose(out, expected, atol=1e-3)
    # the same image in micrometres
    micro = make_image((24, 22), 0.25e-3, 0.875e-3, units="µm")
    micro.data = fine.data.copy()
    np.testing.assert_allclose(match_guide(micro, eds), expected, atol=1e-3)
    coarse = make_image((6, 6), 1.0, 1.25)  # within one scan pixel of the 12 x 11 scan's area
    assert match_guide(coarse, eds).shape == (12, 11)
    wider = make_image((6, 8), 1.0, 1.25)  # 2.5 nm (5 scan pixels) wider
    with pytest.raises(InvalidInputError, match="does not cover"):
        match_guide(wider, eds)


def test_match_guide_other_area_names_shapes():
    eds = make_cube()
    big = make_image((40, 40), 0.5, 1.0)  # same pixel size, larger area (overview)
    with pytest.raises(InvalidInputError, match="40 x 40 px.*12 x 11 px"):
        match_guide(big, eds)


def test_match_guide_non_finite():
    img = make_image((12, 11), 0.5, 1.0)
    img.data[3, 3] = np.nan
    with pytest.raises(InvalidInputError, match="NaN/inf"):
        match_guide(img, make_cube())
    arr = np.ones((12, 11))
    arr[0, 0] = np.inf
    with pytest.raises(InvalidInputError, match="NaN/inf"):
        match_guide(arr, make_cube())


def test_match_guide_undefined_units():
    eds = make_cube()
    img = hs.signals.Signal2D(np.ones((12, 11)))
    assert match_guide(img, eds).shape == (12, 11)
    img.axes_manager.signal_axes[0].scale = 3.0  # uncalibrated: the shape decides
    assert match_guide(img, eds).shape == (12, 11)
    with pytest.raises(InvalidInputError, match="does not cover"):
        match_guide(hs.signals.Signal2D(np.ones((24, 22))), eds)


def test_match_guide_bad_inputs():
    eds = make_cube()
    with pytest.raises(InvalidInputError, match="2-D image"):
        match_guide(make_cube(), eds)
    with pytest.raises(InvalidInputError, match="spectrum image"):
        match_guide(np.ones((12, 11)), np.ones((12, 11, 4)))
    lazy_img = make_image((12, 11), 0.5, 1.0).as_lazy()
    assert match_guide(lazy_img, eds).shape == (12, 11)
