"""SurvBeNIM (Utkin et al., arXiv 2312.06638): explaining survival models with a Beran estimator whose
kernel holds one small importance network per feature. Submodules: ``beran`` (the estimator),
``explainers`` (SurvBeNIM, SurvNAM and their training), ``local`` (neighbours, SurvLIME, SurvSHAP(t)),
``blackbox`` (random survival forest, Cox PH), ``data`` (generators, real datasets), ``metrics``,
``experiment`` (strategies 1 and 2)."""

from .beran import SurvivalTable, beran_survival, check_survival_data, kernel_weights, log_kernel
from .blackbox import CoxPH, RandomSurvivalForest, make_black_box
from .data import cox_clusters, load_real, nonlinear_additive
from .experiment import Settings, strategy1, strategy2
from .explainers import Background, SurvBeNIM, SurvNAM, fit
from .local import neighbours, survlime, survshap
from .metrics import importance_scores, normalise, survival_distance

__all__ = ["Background", "CoxPH", "RandomSurvivalForest", "Settings", "SurvBeNIM", "SurvNAM", "SurvivalTable",
           "beran_survival", "check_survival_data", "cox_clusters", "fit", "importance_scores",
           "kernel_weights", "load_real", "log_kernel", "make_black_box", "neighbours", "nonlinear_additive",
           "normalise", "strategy1", "strategy2", "survival_distance", "survlime", "survshap"]
