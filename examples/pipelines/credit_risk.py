"""The credit-risk model's pipeline: prepare → train → evaluate (the platform's gate) → register → staging.

    mlplat pipeline run examples/pipelines/credit_risk.py --stack dev
    mlplat pipeline schedule examples/pipelines/credit_risk.py --stack dev --cron "0 3 * * 1"

``prepare`` writes the train and held-out sets (seeded: the same data every run, so a second run
takes it from the cache); ``train`` trains inside ``mlplat.start_run`` and registers the version
with ``run.log_model``; ``evaluate`` is the evaluation gate of ``mlplat models promote``;
``register`` takes that version, checked against its sealed manifest, as the pipeline's; and
``promote`` puts it in staging. Production keeps its approvals (credit-risk is critical).
When monitoring retrains credit-risk, this pipeline runs with the monitoring window's labelled
rows in ``$MLPLAT_RETRAIN_DATA``, which ``train`` adds to its training set.
"""
from mlplat.pipelines import Pipeline

pipeline = Pipeline("credit-risk", model="credit-risk", schedule="0 3 * * 1")

prepare = pipeline.step("prepare", "python examples/pipelines/steps/prepare.py --seed 7", outputs=["dataset"])
train = pipeline.step("train", "python examples/pipelines/steps/train.py --model credit-risk --n-estimators 60",
                      inputs={"dataset": prepare.output("dataset")}, retries=1)
evaluate = pipeline.evaluate(train)
register = pipeline.register(train, after=evaluate)
pipeline.promote(register, to="staging")
