"""DDA: data-free knowledge distillation with diffusion augmentation (Li et al. 2024,
arXiv 2410.17606), one module per stage: synthesis (model inversion), augmentation
(diffusers, SDEdit-style), filtering (teacher-embedding cosine similarity), distillation
(temperature-softened KL). :mod:`models.dda.networks` gives every stage the same view of
a teacher or student, ANN or spiking."""
