"""The data benchmark runs and reports what it measured (no timing is asserted)."""
import json

from image_sources import class_folders
from tinyalexnet import bench_data
from tinyalexnet.bench import main as bench_main
from tinyalexnet.datasets.prepare import prepare


def test_bench_data_reports_every_part(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert bench_data.main(["--images", "4", "--rounds", "1", "--store-images", "64",
                            "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for part in ("decode:", "prepare:", "read:", "folder:", "2 workers / 1 worker",
                 "bound: one contiguous copy", "get_batch + random 227 crops"):
        assert part in text
    results = json.loads(out.read_text())
    assert set(results) >= {"decode", "prepare", "read", "folder"}
    if "max_pixel_difference" in results["decode"]:
        assert results["decode"]["max_pixel_difference"] == 0        # the decoders agree
    assert results["read"]["bytes_per_image"] == 2 * 3 * 256 * 256


def test_bench_data_refuses_bad_options(capsys):
    assert bench_data.main(["--what", "everything"]) == 2
    assert "--what takes" in capsys.readouterr().err


def test_bench_says_what_limits_training(tmp_path, capsys):
    class_folders(tmp_path / "src" / "train", per_class=3)
    prepare(tmp_path / "src", tmp_path / "store", size=36, workers=0, log=lambda *a: None)
    argv = ["--model", "alexnet_small", "--batch-size", "4", "--steps", "1", "--warmup", "0",
            "--layer-steps", "0", "--no-memory", "--json", str(tmp_path / "b.json")]
    assert bench_main(argv + ["--data", str(tmp_path / "store")]) == 0
    text = capsys.readouterr().out
    assert "input pipeline:" in text and "training is limited by the" in text
    data = json.loads((tmp_path / "b.json").read_text())["data"]
    assert data["source"] == "store" and data["limited_by"] in ("the input", "the model")
    assert (data["limited_by"] == "the input") == (
        data["input_images_per_s"] < data["training_images_per_s"])
    assert bench_main(argv + ["--data", str(tmp_path / "src")]) == 0         # a folder
    assert "from folder" in capsys.readouterr().out


def test_bench_prepare_gives_both_workers_chunks(tmp_path, monkeypatch, capsys):
    """prepare's own chunks (about 32 MiB: 160 images at 256x256) would put a bench of a few
    hundred images into one or two chunks, and the second worker would have nothing to do:
    the 1 -> 2 worker scaling measured would be the chunking's, not the decoding's."""
    from tinyalexnet.datasets import prepare as prepare_module
    seen, run = [], prepare_module.SplitWriter.run

    def recording_run(self, pool):
        seen.append((self.rows, self.chunks))
        return run(self, pool)

    monkeypatch.setattr(prepare_module.SplitWriter, "run", recording_run)
    assert bench_data.main(["--images", "8", "--rounds", "1", "--what", "prepare"]) == 0
    assert seen and all(chunks >= 2 * 2 for rows, chunks in seen), seen    # 2 workers, 2 each
    assert "chunks of" in capsys.readouterr().out
