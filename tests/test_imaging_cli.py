"""`n2s-eds enhance IN -o OUT`: image files, stacks and Signal2D files; bad input refused."""

from __future__ import annotations

import numpy as np
import pytest

from n2s_eds.cli import main
from n2s_eds.imaging import MapEnhancer


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    ims = [rng.uniform(0, 1, (32, 32)).astype(np.float32) for _ in range(2)]
    enh = MapEnhancer("unet_small", 2, steps=2, batch_size=2, patch=32).fit(ims)
    return str(enh.save(tmp_path_factory.mktemp("model") / "x2.pt"))


def test_enhance_npy_stack_to_npy(model_file: str, tmp_path, capsys) -> None:
    src = tmp_path / "maps.npy"
    np.save(src, np.random.default_rng(1).poisson(5, (3, 10, 14)).astype(np.float32))
    out = tmp_path / "out.npy"
    assert main(["enhance", str(src), "-o", str(out), "--model", model_file]) == 0
    assert np.load(out).shape == (3, 20, 28)
    assert "x2" in capsys.readouterr().out


def test_enhance_png_to_tif_and_hspy_signal(model_file: str, tmp_path) -> None:
    from skimage import io as skio

    hs = pytest.importorskip("hyperspy.api")
    png = tmp_path / "sem.png"
    skio.imsave(png, (np.arange(16 * 12).reshape(16, 12) % 251).astype(np.uint8))
    tif = tmp_path / "sem.tif"
    assert main(["enhance", str(png), "-o", str(tif), "--model", model_file]) == 0
    assert skio.imread(tif).shape == (32, 24)

    sig = hs.signals.Signal2D(np.ones((2, 8, 10), dtype=np.float32))
    sig.axes_manager.signal_axes[0].scale = 4.0
    src = tmp_path / "stack.hspy"
    sig.save(src)
    out = tmp_path / "stack_x2.hspy"
    assert main(["enhance", str(src), "-o", str(out), "--model", model_file]) == 0
    back = hs.load(out)
    assert back.data.shape == (2, 16, 20)
    assert back.axes_manager.signal_axes[0].scale == pytest.approx(2.0)


def test_enhance_refuses_bad_requests_before_work(model_file: str, tmp_path, capsys) -> None:
    src = tmp_path / "a.npy"
    np.save(src, np.ones((8, 8), dtype=np.float32))
    existing = tmp_path / "exists.npy"
    existing.write_bytes(b"keep")
    cases = [
        (["enhance", str(src), "-o", str(existing), "--model", model_file], "already exists"),
        (["enhance", str(src), "-o", str(tmp_path / "o.jpg"), "--model", model_file], ".jpg"),
        (["enhance", str(tmp_path / "none.npy"), "-o", str(tmp_path / "o.npy")], "not exist"),
        (["enhance", str(src), "-o", str(tmp_path / "o.npy"), "--model", model_file,
          "--scale", "4"], "differs"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert existing.read_bytes() == b"keep"
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((8, 8), np.nan, dtype=np.float32))
    assert main(["enhance", str(nan), "-o", str(tmp_path / "n.npy"), "--model", model_file]) == 2
    assert "NaN" in capsys.readouterr().err
    assert not (tmp_path / "n.npy").exists()
