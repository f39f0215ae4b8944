"""Your own images: real folders as they are (odd formats, nesting, other files, broken files), bad folders refused
before any work, the preset `spark new-preset` writes, and that preset run end to end under both engines with
the three arms (scratch, supervised, SparK) in the report."""
from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import eval.cli
from eval.data.config import DataConfig, MiniInConfig
from eval.data.errors import DataError
from eval.data.mini_in import build_mini_in
from eval.data.prepare import prepare
from eval.data.sources import find_fashion_mnist, load_sources
from eval.new_preset import budget_epochs, input_size
from spark.images import BadImageError, read_rgb

REPO = Path(__file__).resolve().parents[1]
EXIT_BAD_INPUT = 2


def photo(size: tuple[int, int] = (48, 32), seed: int = 0) -> Image.Image:
    """An RGB image whose left half is red and right half blue (so a rotation shows), with noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, (size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 2, 0] = 220
    pixels[:, size[0] // 2:, 2] = 220
    return Image.fromarray(pixels)


def odd_files(folder: Path, source: Image.Image) -> dict[str, Path]:
    """Every awkward kind of file a real folder holds, made from ``source``, by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {kind: folder / name for kind, name in (
        ("cmyk", "cmyk.jpg"), ("sixteen_bit", "deep/sixteen.png"), ("exif_rotated", "phone/IMG_0001.JPG"),
        ("tiny", "tiny.png"), ("grey", "grey.png"), ("palette", "palette.png"), ("alpha", "alpha.png"),
        ("corrupt", "broken.jpg"), ("text", "notes.txt"))}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    source.convert("CMYK").save(files["cmyk"], format="JPEG", quality=95)
    grey = np.asarray(source.convert("L"), np.uint16) * 257  # 16-bit grey: the 8-bit grey scaled to 0..65535
    Image.fromarray(grey).save(files["sixteen_bit"])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; viewers rotate 90 degrees clockwise
    source.save(files["exif_rotated"], format="JPEG", quality=95, exif=exif.tobytes())
    source.resize((20, 20)).save(files["tiny"])
    source.convert("L").save(files["grey"])
    source.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(files["palette"], transparency=0)
    rgba = source.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(files["alpha"])
    buffer = io.BytesIO()
    source.save(buffer, format="JPEG", quality=95)
    files["corrupt"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # truncated mid-scan
    files["text"].write_text("a file beside the images, not an image\n")
    return files


def test_awkward_images_decode_as_viewers_show_them_and_a_broken_one_names_itself(tmp_path):
    source = photo()
    files = odd_files(tmp_path, source)
    reference = np.asarray(source, np.float64)
    for kind in ("cmyk", "palette", "alpha"):
        image = read_rgb(files[kind])
        assert image.mode == "RGB" and image.size == source.size
        assert np.abs(np.asarray(image, np.float64) - reference).mean() < 40, kind
    sixteen = np.asarray(read_rgb(files["sixteen_bit"]), np.float64)[..., 0]
    grey = np.asarray(source.convert("L"), np.float64)
    assert np.abs(sixteen - grey).max() <= 1  # scaled to 8 bits, not clipped to white
    rotated = read_rgb(files["exif_rotated"])
    assert rotated.size == (32, 48)  # turned upright: portrait
    top, bottom = np.asarray(rotated, np.float64)[:16].mean((0, 1)), np.asarray(rotated, np.float64)[-16:].mean((0, 1))
    assert top[0] > top[2] and bottom[2] > bottom[0]  # clockwise: the red left half is now on top
    assert read_rgb(files["tiny"]).size == (20, 20)  # kept as is: the crops upsample it
    with pytest.raises(BadImageError, match=re.escape(str(files["corrupt"]))):
        read_rgb(files["corrupt"])


def labelled_set(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    for c in range(classes):
        for i in range(per_class):
            path = root / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(seed=10 * c + i).save(path)
    return root


def unlabelled_set(root: Path, count: int = 6) -> Path:
    for i in range(count):
        path = root / f"batch{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(seed=100 + i).save(path)
    return root


def _empty(root: Path) -> None:
    shutil.rmtree(root / "unlabelled")
    (root / "unlabelled/sub").mkdir(parents=True)
    (root / "unlabelled/sub/readme.txt").write_text("no images here")


def _no_classes(root: Path) -> None:
    shutil.rmtree(root / "labelled")
    (root / "labelled").mkdir()


def _one_class(root: Path) -> None:
    for name in ("class_1", "class_2"):
        shutil.rmtree(root / "labelled" / name)


def _missing(root: Path) -> None:
    shutil.rmtree(root / "labelled")


def _too_small(root: Path) -> None:
    for path in list((root / "labelled/class_2").iterdir())[1:]:
        path.unlink()


BAD_FOLDERS = {
    "empty": (_empty, r"unlabelled: no images \(.*\) in it or its subfolders"),
    "no classes": (_no_classes, r"labelled: no class folders; expected ImageFolder layout"),
    "one class": (_one_class, r"labelled: one class folder \('class_0'\); classification needs two or more"),
    "labelled set missing": (_missing, r"labelled: labelled folder not found"),
    "class too small to split": (_too_small, r"class_2: class 'class_2' has 1 readable image\(s\); the train/val "
                                             r"split needs at least 2"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_a_bad_folder_fails_before_any_work_with_one_line(case, tmp_path, capsys):
    """new-preset and prepare both refuse it, exit 2, one line naming the folder, nothing written."""
    edit, message = BAD_FOLDERS[case]
    unlabelled_set(tmp_path / "unlabelled")
    labelled_set(tmp_path / "labelled")
    edit(tmp_path)
    out = tmp_path / "mine.yaml"
    code = eval.cli.main(["new-preset", "--unlabelled", str(tmp_path / "unlabelled"), "--labelled",
                          str(tmp_path / "labelled"), "--out", str(out), "--supervised", "none", "--scale", "smoke"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT and len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()

    own = {"unlabelled": str(tmp_path / "unlabelled"), "labelled": str(tmp_path / "labelled")}
    with pytest.raises(DataError, match=message):
        prepare(DataConfig.parse({"data": {"root": str(tmp_path / "data"), "classification": "own",
                                           "detection": "none", "own": own}}))
    assert not (tmp_path / "data").exists()


def test_prepare_lists_every_unreadable_image_then_stops_or_leaves_them_out(tmp_path, capsys):
    """Every broken file is listed with its path before anything runs; `stop` fails (exit 2 through the CLI),
    `skip` leaves them out of what the runs read and counts them in the manifest."""
    unlabelled = unlabelled_set(tmp_path / "unlabelled")
    files = odd_files(unlabelled / "odd", photo())
    labelled = labelled_set(tmp_path / "labelled", per_class=5)
    (labelled / "class_1/4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # a second broken file
    broken = sorted([str(files["corrupt"]), str(labelled / "class_1/4.png")])
    data = {"root": str(tmp_path / "data"), "classification": "own", "detection": "none",
            "own": {"unlabelled": str(unlabelled), "labelled": str(labelled), "bad_images": "stop"}}
    with pytest.raises(DataError, match=r"2 unreadable image\(s\) in your folders"):
        prepare(DataConfig.parse({"data": data}))
    listed = re.findall(r"^prepare: unreadable image (\S+): ", capsys.readouterr().err, re.M)
    assert sorted(listed) == broken
    assert not (tmp_path / "data/own").exists()

    prepare(DataConfig.parse({"data": {**data, "own": {**data["own"], "bad_images": "skip"}}}))
    own = tmp_path / "data/own"
    manifest = json.loads((own / "manifest.json").read_text())
    assert sorted(manifest["left_out"]) == broken
    read = (own / "unlabelled.txt").read_text().splitlines()
    decodable = 6 + 7  # the six plain images and the odd ones but the broken one (the text file is no image)
    assert len(read) == manifest["layout"]["unlabelled"] == decodable and str(files["corrupt"]) not in read
    assert manifest["layout"]["classes"] == ["class_0", "class_1", "class_2"]
    train, val = manifest["layout"]["per_class"]["train"], manifest["layout"]["per_class"]["val"]
    assert {c: train[c] + val[c] for c in train} == {"class_0": 5, "class_1": 4, "class_2": 5}
    assert all(v >= 1 for v in val.values())
    linked = sorted(p.resolve() for p in own.glob("*/class_1/*"))
    assert linked == sorted((labelled / "class_1" / f"{i}.png").resolve() for i in range(4))


def test_the_input_size_and_epochs_follow_the_folders_and_the_budget():
    assert input_size(20) == 64 and input_size(150) == 128 and input_size(4000) == 224
    assert budget_epochs(10.0, pretrain_epoch_hours=0.5, finetune_epoch_hours=0.25) == {"pretrain": 10,
                                                                                         "finetune": 20}
    assert budget_epochs(0.01, 1.0, 1.0) == {"pretrain": 1, "finetune": 1}  # at least one
    assert budget_epochs(1e6, 1.0, 1.0) == {"pretrain": 1600, "finetune": 300}  # at most the paper's


def test_without_cached_weights_the_preset_has_no_supervised_arm_and_says_how_to_add_it(tmp_path, monkeypatch,
                                                                                           capsys):
    """Offline, a published default missing from the cache leaves the arm out (with the fetch command); named
    explicitly, it stops with exit 2."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    folders = ["--unlabelled", str(unlabelled_set(tmp_path / "u")), "--labelled", str(labelled_set(tmp_path / "l")),
               "--arch", "resnet18", "--scale", "smoke"]
    out = tmp_path / "mine.yaml"
    assert eval.cli.main(["new-preset", *folders, "--out", str(out)]) == 0
    preset = yaml.safe_load(out.read_text())
    assert preset["supervised_models"] == [] and preset["data"]["classification"] == "own"
    assert "fetch them once on a machine with network" in out.read_text()
    assert f"snakemake --cores all --configfile {out}" in capsys.readouterr().out
    code = eval.cli.main(["new-preset", *folders, "--out", str(tmp_path / "other.yaml"), "--supervised",
                          "torchvision:ResNet18_Weights.IMAGENET1K_V1"])
    assert code == EXIT_BAD_INPUT and "not in the local cache" in capsys.readouterr().err


def test_the_claims_compare_spark_with_scratch_and_with_supervised_weights_on_your_labels(tmp_path):
    """With a model in ``supervised_models``, the fine-tuning from supervised weights is a third arm: a claim of
    its own, paired by seed like the others (here SparK trails it by 2, 2.5 and 1.5 points: contradicted)."""
    from eval.pipeline.dag import Branch
    from eval.tables import Run, claims_table, imagenet_table

    top1 = {"scratch": [70.0, 71.0, 69.0], "sparse": [72.0, 72.5, 71.5], "supervised": [74.0, 75.0, 73.0]}
    runs = [Run("finetune", Branch("resnet18", init, seed, "all"), tmp_path, {"top1": value, "top5": 99.0})
            for init, values in top1.items() for seed, value in enumerate(values)]
    params = {"models": {"resnet18": {}}, "label_regimes": {"all": {}}, "supervised_models": ["resnet18"],
              "detection_models": [], "ablation_models": [], "ablation_regimes": [], "ablations": {}}
    archs = {"resnet18": "resnet18"}
    claims = claims_table(params, {"finetune": runs, "detection": []}, archs, {}).set_index("claim")
    supervised = claims.loc["SparK > supervised, classification (all labels, resnet18)"]
    scratch = claims.loc["SparK > scratch, classification (all labels, resnet18)"]
    assert supervised["difference"] == pytest.approx(-2.0) and supervised["verdict"] == "contradicted"
    assert scratch["difference"] == pytest.approx(2.0) and scratch["verdict"] == "reproduced"
    assert list(imagenet_table(runs, archs)["init"]) == ["scratch", "SparK", "supervised"]
    without = claims_table({**params, "supervised_models": []}, {"finetune": runs, "detection": []}, archs, {})
    assert list(without["claim"]) == ["SparK > scratch, classification (all labels, resnet18)"]


@pytest.mark.slow
def test_your_folders_run_end_to_end_under_both_engines_with_three_arms(tmp_path, isolated_run):
    """An odd folder tree and a small labelled set, made into a preset by `spark new-preset`, run as a DAG:
    Snakemake runs it and DVC adopts it (every stage, the three fine-tuning arms included); a changed parameter
    reruns under `dvc repro` exactly its stage and the report. The report compares SparK with scratch and with
    supervised weights on these labels.

    The supervised arm needs real supervised weights without a network: a classifier trained here, from scratch
    with labels, on mini-in's train split (the project's own generated labelled data standing in for ImageNet).
    The labelled set is mini-in's val split (other Fashion-MNIST objects: nothing the classifier saw), the
    unlabelled folder its unlabelled pool, spread over nested folders beside every awkward kind of file."""
    from eval.finetune import finetune
    from eval.finetune.config import FinetuneConfig
    from test_workflow import BIN, checkout, run

    sources = load_sources(find_fashion_mnist(DataConfig().fashion_mnist))
    mini = tmp_path / "mini-in"
    build_mini_in(mini, MiniInConfig(image_size=32, classes=3, train_per_class=10, val_per_class=8,
                                     unlabeled_per_class=6), sources, seed=0, workers=2)
    supervised = tmp_path / "supervised"
    finetune(FinetuneConfig.parse({"finetune": {
        "data": str(mini), "arch": "resnet18", "recipe": "resnet50", "input_size": 32, "global_batch": 10,
        "epochs": 1, "warmup_epochs": 0, "base_lr": 0.128, "mixup": 0.0, "erase_prob": 0.0, "drop_path_rate": 0.0,
        "ema_decay": 0.9, "num_workers": 0}}), supervised)
    weights = supervised / "encoder.pth"

    unlabelled = tmp_path / "folders/unlabelled"
    for i, path in enumerate(sorted((mini / "unlabeled").glob("*.png"))):
        target = unlabelled / f"day{i % 3}" / ("raw" if i % 2 else "") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    odd_files(unlabelled / "phone dump", photo())
    labelled = tmp_path / "folders/labelled"
    shutil.copytree(mini / "val", labelled)

    root = checkout(tmp_path, "smoke")
    preset = root / "configs/mine.yaml"
    assert eval.cli.main(["new-preset", "--unlabelled", str(unlabelled), "--labelled", str(labelled), "--out",
                          str(preset), "--arch", "resnet18", "--supervised", str(weights), "--scale", "smoke"]) == 0
    shutil.copy(preset, root / "params.yaml")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "my preset"], root)
    dvc, snakemake = str(BIN / "dvc"), str(BIN / "snakemake")
    assert "dvc: adopted 7 stage(s) into dvc.lock" in run([snakemake, "--cores", "2"], root)  # every stage

    prepared = json.loads((root / "data/mine/own/manifest.json").read_text())
    assert list(prepared["left_out"]) == [str(unlabelled / "phone dump/broken.jpg")]
    assert prepared["layout"]["unlabelled"] == 3 * 6 + 7  # the pool and the awkward files that decode
    claims = pd.read_csv(root / "results/mine/claims.csv")
    arms = claims[claims["claim"].str.contains("classification")].set_index("claim")
    assert set(arms.index) == {"SparK > scratch, classification (all labels, resnet18)",
                               "SparK > supervised, classification (all labels, resnet18)"}
    assert arms["difference"].map(np.isfinite).all() and set(arms["verdict"]) == {"inconclusive"}  # one seed
    table = pd.read_csv(root / "results/mine/imagenet.csv")
    assert sorted(table["init"]) == ["SparK", "scratch", "supervised"]
    assert table["top-1"].between(0, 100).all()
    report = (root / "results/mine/REPORT.md").read_text()
    assert "Runs on your own images" in report and "![reconstructions](reconstructions.png)" in report
    assert (root / "results/mine/reconstructions.png").stat().st_size > 0

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["motivation"]["bootstrap"] = 100  # the cheapest stage: DVC reruns it and the report, nothing else
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = re.findall(r"Running stage '([^']+)'", run([dvc, "repro"], root))
    assert ran == ["motivation@resnet18", "report"]
    assert "Nothing to be done" in run([snakemake, "-n", "--cores", "1"], root)
    rerun = pd.read_csv(root / "results/mine/claims.csv")
    assert rerun[rerun["claim"].str.contains("classification")]["difference"].tolist() == \
        arms["difference"].tolist()  # the adopted arms, read again by DVC's report


@pytest.mark.slow
def test_a_run_scale_preset_takes_its_epochs_from_the_budget_timed_here(tmp_path, monkeypatch):
    """At run scale the epochs come from training steps timed on this machine: a budget far beyond these few
    images reaches the paper's schedules; three seeds pair the arms; the preset validates as the DAG reads it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    out = tmp_path / "mine.yaml"
    assert eval.cli.main(["new-preset", "--unlabelled", str(unlabelled_set(tmp_path / "u")), "--labelled",
                          str(labelled_set(tmp_path / "l")), "--out", str(out), "--arch", "resnet18",
                          "--budget-hours", "1000"]) == 0
    preset = yaml.safe_load(out.read_text())
    assert (preset["pretrain"]["epochs"], preset["finetune"]["epochs"]) == (1600, 300)
    assert preset["seeds"] == [0, 1, 2] and preset["pretrain"]["input_size"] == 64  # 32-px images: the smallest
    assert preset["resources"]["pretrain"]["runtime"] == 1000 * 60


def test_coco_data_adds_mask_rcnn_with_its_three_arms(tmp_path):
    coco = tmp_path / "coco"
    for split in ("train", "val"):
        (coco / f"{split}2017").mkdir(parents=True)
        (coco / "annotations").mkdir(exist_ok=True)
        (coco / f"annotations/instances_{split}2017.json").write_text('{"images": [], "annotations": [], '
                                                                      '"categories": []}')
    out = tmp_path / "mine.yaml"
    assert eval.cli.main(["new-preset", "--unlabelled", str(unlabelled_set(tmp_path / "u")), "--labelled",
                          str(labelled_set(tmp_path / "l")), "--coco", str(coco), "--out", str(out), "--arch",
                          "resnet18", "--supervised", "none", "--scale", "smoke"]) == 0
    preset = yaml.safe_load(out.read_text())
    assert preset["detection_models"] == ["resnet18"] and preset["data"]["detection"] == "coco"
    assert preset["data"]["coco"]["root"] == str(coco.resolve())
    (coco / "annotations/instances_val2017.json").unlink()
    assert eval.cli.main(["new-preset", "--unlabelled", str(tmp_path / "u"), "--labelled", str(tmp_path / "l"),
                          "--coco", str(coco), "--out", str(tmp_path / "other.yaml")]) == EXIT_BAD_INPUT
    assert not (tmp_path / "other.yaml").exists()
