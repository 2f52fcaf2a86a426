"""Reading checkpoint files: a good one loads; a bad one is refused with a message naming the file and the fix."""

import fractions

import pytest
import torch

from ftcourse import models, pretrain


@pytest.fixture
def checkpoint(tmp_path):
    """A small checkpoint written the way `ftcourse pretrain` writes them."""
    model = models.resnet(3, width=4, blocks=(1, 1))
    path = tmp_path / "small.pt"
    pretrain.save_checkpoint(model, {"note": "test"}, {}, path)
    return path, model


def rewrite(path, change):
    """Load the checkpoint at ``path``, apply ``change`` to it and save it back."""
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    return path


def test_a_saved_checkpoint_loads_as_the_same_model_in_eval_mode(checkpoint):
    path, original = checkpoint
    model = models.load_checkpoint(path)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(model(images), original.eval()(images))
    assert not model.training and model.checkpoint_file == path and model.config == original.config


def test_a_model_with_a_new_head_can_be_saved_and_loaded_again(tmp_path):
    model = models.replace_head(models.resnet(10, width=4, blocks=(1,)), 4)
    pretrain.save_checkpoint(model, {}, {}, tmp_path / "finetuned.pt")
    assert models.load_checkpoint(tmp_path / "finetuned.pt").num_classes == 4


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no ftcourse checkpoint file at {tmp_path / 'nope.pt'}"):
        models.load_checkpoint(tmp_path / "nope.pt")


def test_an_empty_file_is_named_with_the_fix(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt is empty .*Delete it and make it again .*ftcourse pretrain"):
        models.load_checkpoint(tmp_path / "empty.pt")


def test_a_truncated_file_is_named_with_the_fix(checkpoint):
    path, _ = checkpoint
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"small\.pt cannot be read: it is truncated .*Delete it and make it again"):
        models.load_checkpoint(path)


def test_a_file_that_is_not_a_torch_file_is_named(tmp_path):
    (tmp_path / "notes.pt").write_text("hello, this is text")
    with pytest.raises(ValueError, match=r"notes\.pt cannot be read: .*not a file that torch\.save wrote"):
        models.load_checkpoint(tmp_path / "notes.pt")


def test_a_file_holding_more_than_tensors_is_refused_unread(tmp_path):
    torch.save({"format": 1, "value": fractions.Fraction(1, 2)}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match=r"code\.pt cannot be read: it holds more than tensors and plain values"):
        models.load_checkpoint(tmp_path / "code.pt")


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is a folder: pass the path of the ftcourse checkpoint file itself"):
        models.load_checkpoint(tmp_path)


def test_a_file_that_is_not_a_dict_is_refused(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt holds a list, not a dict"):
        models.load_checkpoint(tmp_path / "list.pt")


def test_a_plain_state_dict_is_not_a_checkpoint(tmp_path):
    torch.save(models.resnet(3, width=4).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"weights\.pt is not an ftcourse checkpoint .*no \['format', 'config'"):
        models.load_checkpoint(tmp_path / "weights.pt")


def test_another_format_is_refused(checkpoint):
    path = rewrite(checkpoint[0], lambda state: state.update(format=2))
    with pytest.raises(ValueError, match="its format is 2; this version of ftcourse reads format 1"):
        models.load_checkpoint(path)


@pytest.mark.parametrize("config, message", [
    ({"num_classes": 3, "width": 4}, r"exactly resnet\(\)'s arguments"),
    ({"num_classes": 3, "width": 4, "blocks": (1,), "stem_stride": 1, "depth": 3}, r"exactly resnet\(\)'s arguments"),
    ({"num_classes": 3, "width": "4", "blocks": (1,), "stem_stride": 1}, "width should be an int from 1 to"),
    ({"num_classes": True, "width": 4, "blocks": (1,), "stem_stride": 1}, "num_classes should be an int"),
    ({"num_classes": 3, "width": 10**9, "blocks": (1,), "stem_stride": 1}, "width should be an int from 1 to"),
    ({"num_classes": 3, "width": 4, "blocks": (), "stem_stride": 1}, "blocks should be a list of 1 to 16"),
    ({"num_classes": 3, "width": 4, "blocks": (1, 0), "stem_stride": 1}, "blocks should be a list of 1 to 16"),
])
def test_a_config_that_is_not_resnets_arguments_is_refused_before_anything_is_built(checkpoint, config, message):
    path = rewrite(checkpoint[0], lambda state: state.update(config=config))
    with pytest.raises(ValueError, match=message):
        models.load_checkpoint(path)


def test_weights_that_do_not_fit_the_config_are_listed_by_name(checkpoint):
    def damage(state):
        weights = state["state_dict"]
        del weights["head.bias"]
        weights["extra.weight"] = torch.zeros(2)
        weights["head.weight"] = torch.zeros(5, 8)

    path = rewrite(checkpoint[0], damage)
    with pytest.raises(ValueError, match=r"missing weights head\.bias; unexpected weights extra\.weight; wrong "
                                         r"shapes: head\.weight is \(5, 8\) instead of \(3, 8\)") as error:
        models.load_checkpoint(path)
    assert str(path) in str(error.value)


def test_a_weight_that_is_not_a_tensor_is_refused(checkpoint):
    path = rewrite(checkpoint[0], lambda state: state["state_dict"].update({"head.bias": [0.0, 0.0, 0.0]}))
    with pytest.raises(ValueError, match=r"head\.bias is a list, not a tensor"):
        models.load_checkpoint(path)


def test_read_torch_file_names_the_kind_of_file_and_takes_its_fix(tmp_path):
    (tmp_path / "run.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"The training checkpoint file .*run\.pt cannot be read.*Start afresh\."):
        models.read_torch_file(tmp_path / "run.pt", "training checkpoint", fix="Start afresh.")
    with pytest.raises(ValueError, match="Delete it, or choose another path."):
        models.read_torch_file(tmp_path / "run.pt", "training checkpoint")
    torch.save({"step": 3}, tmp_path / "good.pt")
    assert models.read_torch_file(tmp_path / "good.pt", "training checkpoint") == {"step": 3}
