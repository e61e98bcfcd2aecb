"""The larq-zoo architectures: parameter counts equal the published ones, and each converts
to an LCE file whose binary convolutions run in tfcompress's kernels."""

import pytest

from tfcompress.models import larqzoo


@pytest.mark.parametrize("name", sorted(larqzoo.LARQ_ZOO))
def test_parameter_count_is_the_published_one(name):
    count, method = larqzoo.PUBLISHED_PARAMETERS[name]
    model = larqzoo.LARQ_ZOO[name]()
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    assert larqzoo.parameter_count(model, method) == count


def test_bireal_imagenet_matches_larq_zoo_count():
    # tfcompress.models.BiRealNet(imagenet=True) is larq-zoo's BiRealNet (11,699,112)
    from tfcompress.models import BiRealNet

    assert BiRealNet(imagenet=True).count_params() == 11_699_112


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="too small"):
        larqzoo.QuickNet(input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="num_classes"):
        larqzoo.BinaryResNetE18(num_classes=0)
    with pytest.raises(ValueError, match="method"):
        larqzoo.parameter_count(larqzoo.QuickNetSmall(input_shape=(32, 32, 3)), "torch")


def test_no_top_and_small_input():
    model = larqzoo.BinaryDenseNet28(input_shape=(64, 64, 3), include_top=False)
    assert model.output_shape[-1] == 576  # larq-zoo's last_feature_dim for BinaryDenseNet28
