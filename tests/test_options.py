"""The option objects: every from_config reads keys the default config has, once, into a frozen value."""
import dataclasses

import pytest

from pix2pixhd_jax.configs import default, tiny_test
from pix2pixhd_jax import augment, features, losses, run_config
from pix2pixhd_jax.editing.options import EditorOptions
from pix2pixhd_jax.evaluation.evaluate import EvalOptions
from pix2pixhd_jax.evaluation.segmentation import SegmenterOptions
from pix2pixhd_jax.inference import InferenceOptions


def test_every_option_object_reads_the_default_config_into_a_frozen_value():
    config = default.get_config()
    options = [losses.LossOptions.from_config(config.loss), EvalOptions.from_config(config.eval),
               SegmenterOptions.from_config(config), InferenceOptions.from_config(config),
               EditorOptions.from_config(config), augment.AugmentOptions.from_config(config.augment),
               features.BankOptions.from_config(config.features)]
    for o in options:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(o, dataclasses.fields(o)[0].name, None)
        hash(o)  # static arguments of jitted functions must hash
    loss, evaluation, segmenter, inference, editor, _, bank = options
    assert bank.n_clusters == config.features.n_clusters and bank.split == config.features.split
    assert loss.gan_mode == config.loss.gan_mode and loss.vgg_layer_weights == tuple(config.loss.vgg_layer_weights)
    assert evaluation.split == config.eval.split and segmenter.heldout_split == config.eval.split
    assert inference.divisor == 2 ** config.model.n_downsample_global and not inference.colour_features
    assert editor.local_margin_px == config.editing.local_margin_px


def test_options_follow_the_config_they_are_read_from():
    config = tiny_test.get_config()
    config.model.instance_feat, config.model.feat_num = True, 3
    config.loss.lambda_feature_colour = 1.0
    config.features.thing_classes = (26, 24)
    inference = InferenceOptions.from_config(config)
    assert inference.uses_features and inference.colour_features and inference.feat_num == 3
    assert EditorOptions.from_config(config).thing_classes == (26, 24)
    del config["editing"]  # a config saved before the editing section: no local widths
    assert EditorOptions.from_config(config).local_margin_px is None


def test_a_config_saved_before_a_key_existed_is_refused_naming_the_key_and_the_fix():
    config = default.get_config()
    del config.loss["lambda_feature_colour"]
    with pytest.raises(run_config.ConfigError, match=r"lacks loss.lambda_feature_colour: .*older version.*defaults="):
        InferenceOptions.from_config(config)
    completed = run_config.complete(config, default.get_config())
    assert not InferenceOptions.from_config(completed).colour_features
