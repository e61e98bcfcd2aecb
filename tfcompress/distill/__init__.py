"""Knowledge distillation (Hinton, Vinyals, Dean 2015, arXiv 1503.02531) as a Keras model.

>>> student = Distiller(student=qmodel, teacher=model, temperature=4.0, alpha=0.9)  # doctest: +SKIP
>>> student.compile(optimizer="adam", metrics=["accuracy"]); student.fit(x, y)      # doctest: +SKIP
>>> student.student.save("student.keras")     # the trained student, without the teacher  # doctest: +SKIP

Loss per example: ``(1 - alpha) CE(y, softmax(z_s)) + alpha T^2 KL(softmax(z_t/T) || softmax(z_s/T))``
(the ``T^2`` keeps the soft-target gradients on the same scale as ``T`` changes), plus an
optional attention-transfer feature loss (Zagoruyko & Komodakis 2017, arXiv 1612.03928):
``beta sum_pairs || a_s/||a_s|| - a_t/||a_t|| ||_2`` with ``a = mean_c(f^2)`` flattened over
space, between chosen student and teacher layers of the same spatial size.
"""

from tfcompress.distill.distiller import Distiller, attention_map, kd_loss, kd_terms

__all__ = ["Distiller", "attention_map", "kd_loss", "kd_terms"]
