"""Exercise checks: run a learner's function and the reference on the same fresh inputs, say "passed" or where
the first mismatch is (with a hint), and return what the cells below should use: the learner's function, or
mechlib's reference when the exercise was skipped. One module per lesson; `common` holds what they share."""

from mechlib.checks.common import Checked, first_mismatch, run_check
from mechlib.checks.lesson01 import check_residual_decomposition, check_logit_attribution, check_induction_scores
from mechlib.checks.lesson02 import check_toy_forward, check_weighted_loss, check_feature_dimensionality
from mechlib.checks.lesson03 import check_reference_sae, check_keep_top, check_splice_hook
from mechlib.checks.lesson04 import check_head_patching_loop, check_batched_head_sweep, check_attribution_heads
from mechlib.checks.lesson05 import check_nnsight_head_patch, check_nnsight_logit_lens, check_nnsight_attribution
from mechlib.checks.lesson06 import check_add_vector, check_clamp_latent
from mechlib.checks.lesson07 import check_control_task, check_logit_lens, check_own_tokens, check_project_out
from mechlib.checks.lesson08 import check_error_node, check_influence, check_total_effects

__all__ = ["Checked", "check_add_vector", "check_attribution_heads", "check_batched_head_sweep", "check_clamp_latent", "check_control_task", "check_error_node", "check_influence", "check_feature_dimensionality", "check_head_patching_loop", "check_induction_scores", "check_keep_top", "check_logit_lens", "check_logit_attribution", "check_own_tokens", "check_nnsight_attribution", "check_nnsight_head_patch", "check_nnsight_logit_lens", "check_project_out", "check_reference_sae", "check_residual_decomposition", "check_splice_hook", "check_total_effects", "check_toy_forward", "check_weighted_loss", "first_mismatch", "run_check"]
