"""Statistics for comparing trained arms on a test split: paired bootstrap intervals of mIoU
(`paired_bootstrap`), structural metrics of label maps (`structure`), and the per-image
evaluation that feeds both (`per_image`)."""
