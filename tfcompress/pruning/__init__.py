"""Pruning (book chapter 5): schedules, TF-MOT magnitude pruning, structured filter pruning as
a Keras callback, and ``shrink`` to physically remove pruned filters.

Unstructured / N:M (on TF-MOT)::

    pruned = tfcompress.pruning.magnitude(model, 0.9, schedule=PolynomialDecay(0, 0.9, 0, 500))
    pruned.compile(...); pruned.fit(x, y, callbacks=[tfcompress.pruning.UpdatePruningStep()])
    final = tfcompress.pruning.strip(pruned)
    tfcompress.pruning.convert_sparse(final).verify(x_test, y_test)

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
    PruningSummaries, UpdatePruningStep, convert_sparse, is_wrapped, kernel_sparsity, magnitude,
    strip,
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
    "PruningSummaries", "UpdatePruningStep", "add_filter_masks", "convert_sparse", "count_macs",
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
from tfcompress.pruning.bnn import (  # noqa: E402
    BayesianFeatureLoss, BayesianFilterPruning, BayesianPruningCriterion, BONNConv2D, BONNSign,
    BONNTrainer, FoldsPrunedInputs, RBCNPruning, RBCNSign, RBCNTrainer, RBConv2D,
    binary_network, bonn_kernel_loss, discriminator_loss, feature_data_loss, generator_loss,
    kmeans, rbcn_discriminator, rbcn_kernel_loss,
)

__all__ += [
    "BayesianFeatureLoss", "BayesianFilterPruning", "BayesianPruningCriterion", "BONNConv2D",
    "BONNSign", "BONNTrainer", "FoldsPrunedInputs", "RBCNPruning", "RBCNSign", "RBCNTrainer",
    "RBConv2D", "binary_network", "bonn_kernel_loss", "discriminator_loss",
    "feature_data_loss", "generator_loss", "kmeans", "rbcn_discriminator", "rbcn_kernel_loss",
]
