"""Runtime clients of the aws provider: the lifecycle on SageMaker through boto3.

Everything here imports boto3 lazily. Governance state (stages, gate reports, approvals,
rollouts, the audit chain) stays in the platform database under the stack's state
directory; SageMaker holds the model packages, endpoints and their traffic weights,
and mirrors every approval decision (``ModelApprovalStatus``) and promotion.
"""
