import pytest
import torch
from PIL import Image

from effnet.bench.accuracy import class_to_output, open_image_folder, scaled_preprocessing, top1_accuracy
from effnet.errors import EffnetError
from effnet.weights.specs import Preprocessing


def test_folders_map_by_index_then_name_then_position():
    assert class_to_output(["10", "2"], None, 20) == [10, 2]  # not ImageFolder's string order
    assert class_to_output(["dog", "cat"], ["cat", "dog", "eel"], 3) == [1, 0]
    assert class_to_output(["n01", "n02", "n03"], ["a", "b", "c"], 3) == [0, 1, 2]
    with pytest.raises(EffnetError, match="cannot match 2 class folders to the model's 5 outputs"):
        class_to_output(["x", "y"], None, 5)


def test_top1_uses_the_folder_labels(tmp_path):
    for label, color in (("0", "red"), ("1", "blue")):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 20), color).save(tmp_path / label / f"{i}.png")

    def predict_red_as_0(images):  # red images have a high first channel
        red = images[:, 0].mean(dim=(1, 2)) > images[:, 2].mean(dim=(1, 2))
        return torch.stack([red.float(), (~red).float()], dim=1)

    pre = Preprocessing(16, 18)
    assert top1_accuracy(predict_red_as_0, tmp_path, pre, batch_size=4).top1 == 100.0
    always_0 = top1_accuracy(lambda x: torch.ones(len(x), 2) * torch.tensor([1.0, 0.0]), tmp_path, pre)
    assert (always_0.top1, always_0.images, always_0.skipped) == (50.0, 6, [])


def test_unreadable_images_are_skipped_and_listed(tmp_path):
    (tmp_path / "0").mkdir()
    Image.new("RGB", (20, 20), "red").save(tmp_path / "0" / "good.png")
    (tmp_path / "0" / "empty.jpg").write_bytes(b"")
    (tmp_path / "0" / "junk.png").write_bytes(b"not a png at all")
    result = top1_accuracy(lambda x: torch.ones(len(x), 1), tmp_path, Preprocessing(16, 18))
    assert (result.top1, result.images) == (100.0, 1)
    assert [line.split(": ")[0].rsplit("/", 1)[-1] for line in result.skipped] == ["empty.jpg", "junk.png"]
    (tmp_path / "0" / "good.png").unlink()
    with pytest.raises(EffnetError, match="none of its 2 images could be read"):
        top1_accuracy(lambda x: torch.ones(len(x), 1), tmp_path, Preprocessing(16, 18))


def test_data_that_is_not_an_image_folder_is_refused(tmp_path):
    with pytest.raises(EffnetError, match="expected a directory"):
        open_image_folder(tmp_path / "missing")
    (tmp_path / "loose.jpg").write_bytes(b"")
    with pytest.raises(EffnetError, match="not an ImageFolder-style directory"):
        open_image_folder(tmp_path)


def test_preprocessing_scales_with_the_image_size():
    pre = Preprocessing(224, 256, "bilinear")
    assert scaled_preprocessing(pre, 112) == Preprocessing(112, 128, "bilinear")
    assert scaled_preprocessing(pre, 224) is pre
