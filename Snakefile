"""Sign-language data pipeline and trainer.

Run everything:   snakemake --cores all all
Quick demo:       make demo   (the same rules on 10 glosses: --configfile pipeline/demo.yaml)
RGB features:     snakemake --cores 2 frames_all hand_crops_all   (not part of `all`)
One stage only:   snakemake --cores 1 data/manifest/manifest.parquet
Why a rerun?      snakemake -n   (each job's `reason:` line; not --list-changes, see docs/experiments.md)
Report:           snakemake --report report.html   (curves, confusion matrix, pose summary, overlay)

Every value comes from params.yaml (validated by sldata.params against
pipeline/schemas/params.schema.yaml) and reaches a rule through `params:`.
The same stages exist in dvc.yaml for `dvc repro` / `dvc exp run`.
"""

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "pipeline/report/workflow.rst"


include: "pipeline/rules/common.smk"
include: "pipeline/rules/manifest.smk"
include: "pipeline/rules/subset.smk"
include: "pipeline/rules/acquire.smk"
include: "pipeline/rules/pose.smk"
include: "pipeline/rules/features.smk"
include: "pipeline/rules/train.smk"
include: "pipeline/rules/example.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
