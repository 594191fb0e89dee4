"""Missing-scan synthesis (Baldini et al., arXiv 2312.05176): T1 → T2 by clustering and by Pix2Pix, judged by
MSE and by the Dice of a DeepMedic-style segmenter. Submodules: ``brats`` (BraTS-format folders),
``phantom`` (the simulated cohort), ``clustering`` (BrainClustering and the baselines), ``pix2pix``,
``deepmedic``, ``metrics``."""

from .brats import CONTRASTS, Subject, list_subjects, read_cohort, read_subject, write_subject
from .clustering import BrainClustering, complement_t2, kmeans_1d, min_max, random_t2, remove_outliers
from .metrics import REGIONS, dice, mse, region_dice, union_foreground
from .phantom import SEQUENCES, TISSUES, PhantomSettings, simulate_subject

__all__ = ["CONTRASTS", "REGIONS", "SEQUENCES", "TISSUES", "BrainClustering", "PhantomSettings", "Subject",
           "complement_t2", "dice", "kmeans_1d", "list_subjects", "min_max", "mse", "random_t2", "read_cohort",
           "read_subject", "region_dice", "remove_outliers", "simulate_subject", "union_foreground",
           "write_subject"]
