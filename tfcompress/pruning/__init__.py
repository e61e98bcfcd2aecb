"""Pruning (book chapter 5): schedules, TF-MOT magnitude pruning, structured filter pruning as
a Keras callback, and ``shrink`` to physically remove pruned filters.

Unstructured / N:M (on TF-MOT)::

    pruned = tfcompress.pruning.magnitude(model, 0.9, schedule=PolynomialDecay(0, 0.9, 0, 500))
    pruned.compile(...); pruned.fit(x, y, callbacks=[tfcompress.pruning.UpdatePruningStep()])
    final = tfcompress.pruning.strip(pruned)
    tfcompress.convert_sparse(final).verify(x_test, y_test)     # TFLite sparse weights

Structured (filters)::

    pruner = tfcompress.pruning.FilterPruning(target_sparsity=0.5, method="l1")
    model = pruner.prepare(model)            # inserts FilterMask layers; compile after this
    model.compile(...); model.fit(x, y, epochs=3, callbacks=[pruner])
    small = tfcompress.pruning.shrink(model)
"""

from tfcompress.pruning import schedules
from tfcompress.pruning.filters import (
    METHODS, Criterion, FilterPruning, NormCriterion, add_filter_masks, filter_norms,
)
from tfcompress.pruning.unstructured import (
    PruningSummaries, UpdatePruningStep, is_wrapped, kernel_sparsity, magnitude, strip,
)
from tfcompress.pruning.masks import FilterMask, filter_masks
from tfcompress.pruning.methods import (
    CoGDCriterion, DFSCriterion, EMCriterion, SoftMaskProximal, gmm_em_1d, soft_threshold,
)
from tfcompress.pruning.prunable import PrunableQuantConv2D, PrunableQuantDense, make_prunable
from tfcompress.pruning.report import (
    count_macs, count_params, layer_macs, plot_sparsity, sparsity_report,
)
from tfcompress.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfcompress.pruning.surgery import removed_filters, shrink

__all__ = [
    "CoGDCriterion", "DFSCriterion", "EMCriterion", "SoftMaskProximal", "gmm_em_1d",
    "soft_threshold", "ConstantSparsity", "Criterion", "FilterMask", "FilterPruning", "METHODS", "NormCriterion",
    "PolynomialDecay", "PrunableQuantConv2D", "PrunableQuantDense", "PruningSchedule",
    "PruningSummaries", "UpdatePruningStep", "add_filter_masks", "count_macs",
    "count_params", "filter_masks", "filter_norms", "is_wrapped", "kernel_sparsity",
    "layer_macs", "magnitude", "make_prunable", "plot_sparsity", "removed_filters", "schedules",
    "shrink", "sparsity_report", "strip",
]
from tfcompress.pruning.conv3d import (  # noqa: E402
    MixedBackpropCriterion, MixedBackpropPruning, select_module, variance_cost_volume,
)

__all__ += [
    "MixedBackpropCriterion", "MixedBackpropPruning", "select_module", "variance_cost_volume",
]
# Pruning of binary networks (RBCN, BONN). Their quantizers, layers and losses live in
# tfcompress.quantizers, tfcompress.layers and tfcompress.losses; they are re-exported here
# because users of these methods reach for them together.
from tfcompress.layers.scaled_binary import BONNConv2D, FoldsPrunedInputs, RBConv2D  # noqa: E402
from tfcompress.losses import (  # noqa: E402
    BayesianFeatureLoss, bonn_kernel_loss, discriminator_loss, feature_data_loss, generator_loss,
    rbcn_kernel_loss,
)
from tfcompress.pruning.bonn import (  # noqa: E402
    BayesianFilterPruning, BayesianPruningCriterion, BONNTrainer, bonn_layers, kmeans,
)
from tfcompress.pruning.rbcn import (  # noqa: E402
    RBCNPruning, RBCNTrainer, rbcn_discriminator, rbcn_layers,
)
from tfcompress.quantizers.scaled_sign import BONNSign, RBCNSign  # noqa: E402
from tfcompress.training import unwrap as binary_network  # noqa: E402

__all__ += [
    "BayesianFeatureLoss", "BayesianFilterPruning", "BayesianPruningCriterion", "BONNConv2D",
    "BONNSign", "BONNTrainer", "FoldsPrunedInputs", "RBCNPruning", "RBCNSign", "RBCNTrainer",
    "RBConv2D", "binary_network", "bonn_kernel_loss", "bonn_layers", "discriminator_loss",
    "feature_data_loss", "generator_loss", "kmeans", "rbcn_discriminator", "rbcn_kernel_loss",
    "rbcn_layers",
]
# DFS block pruning and centre loss (card 5.3).
from tfcompress.pruning.blocks import add_block_masks, find_blocks, remove_pruned_blocks  # noqa: E402
from tfcompress.pruning.masks import BlockMask, block_masks  # noqa: E402
from tfcompress.pruning.methods import DFSTrainer  # noqa: E402

__all__ += ["BlockMask", "DFSTrainer", "add_block_masks", "block_masks", "find_blocks",
            "remove_pruned_blocks"]
