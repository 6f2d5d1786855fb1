rule train:
    """Packed keypoints (train + val only) -> the best model by val top-1, its history and curves."""
    input:
        keypoints=data_path("features", "pose", "keypoints.npy"),
        index=data_path("features", "pose", "index.parquet"),
        skeleton=data_path("features", "pose", "skeleton.json"),
        label_map=data_path("subset", "label_map.json"),
        samples=data_path("subset", "samples.parquet"),
        code=code_files("train"),
    output:
        model=data_path("train", "model.pt"),
        metrics=data_path("train", "metrics.json"),
        history=data_path("train", "history.csv"),
        curves=report(data_path("train", "curves.png"), caption="../report/curves.rst", category="Training"),
    params:
        **stage_params(config, "train"),
        packed=lambda wildcards, input: os.path.dirname(input.keypoints),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        work_dir=data_path("cache", "train"),
    threads: get_train_threads(config["train"])
    resources:
        gpu=1 if config["train"]["device"].startswith("cuda") else 0,
    log:
        log_path("train.log"),
    benchmark:
        benchmark_path("train.tsv")
    shell:
        "python -m sltrain train --params {PARAMS_FILE:q} --packed {params.packed:q} --label-map {input.label_map:q}"
        " --samples {input.samples:q} --out-dir {params.out_dir:q} --work-dir {params.work_dir:q} --no-progress"
        " > {log} 2>&1"


# The RGB and hand-crop models are not part of `all` (they need frames_all / hand_crops_all and
# take 30-40 min each on a 2-core CPU): `snakemake --cores 2 train_rgb train_hands`.


rule train_rgb:
    """RGB frames (train + val only) -> the RGB clip model (S3D / MobileNet-V3 style), best by val top-1."""
    input:
        frames=get_shard_files("frames", FRAMES_FILE),
        index=get_shard_files("frames", "index.parquet"),
        samples=data_path("subset", "samples.parquet"),
        label_map=data_path("subset", "label_map.json"),
        code=code_files("train_rgb"),
    output:
        model=data_path("train_rgb", "model.pt"),
        metrics=data_path("train_rgb", "metrics.json"),
        history=data_path("train_rgb", "history.csv"),
        curves=data_path("train_rgb", "curves.png"),
    params:
        **stage_params(config, "train_rgb"),
        frames_dir=lambda wildcards, input: shard_root(input.index[0]),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        work_dir=data_path("cache", "train_rgb"),
    threads: config["train_rgb"]["threads"]
    resources:
        gpu=1 if config["train_rgb"]["device"].startswith("cuda") else 0,
    log:
        log_path("train_rgb.log"),
    benchmark:
        benchmark_path("train_rgb.tsv")
    shell:
        "python -m sltrain train-rgb --params {PARAMS_FILE:q} --frames {params.frames_dir:q} --samples {input.samples:q}"
        " --label-map {input.label_map:q} --out-dir {params.out_dir:q} --work-dir {params.work_dir:q} --no-progress"
        " > {log} 2>&1"


rule train_hands:
    """Hand crops + packed keypoints (train + val only) -> the VTN on hand crops and pose flow, best by val top-1."""
    input:
        crops=get_shard_files("hand_crops", HAND_CROPS_FILE),
        index=get_shard_files("hand_crops", "index.parquet"),
        keypoints=data_path("features", "pose", "keypoints.npy"),
        packed_index=data_path("features", "pose", "index.parquet"),
        skeleton=data_path("features", "pose", "skeleton.json"),
        samples=data_path("subset", "samples.parquet"),
        label_map=data_path("subset", "label_map.json"),
        code=code_files("train_hands"),
    output:
        model=data_path("train_hands", "model.pt"),
        metrics=data_path("train_hands", "metrics.json"),
        history=data_path("train_hands", "history.csv"),
        curves=data_path("train_hands", "curves.png"),
    params:
        **stage_params(config, "train_hands"),
        crops_dir=lambda wildcards, input: shard_root(input.index[0]),
        packed=lambda wildcards, input: os.path.dirname(input.keypoints),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        work_dir=data_path("cache", "train_hands"),
    threads: config["train_hands"]["threads"]
    resources:
        gpu=1 if config["train_hands"]["device"].startswith("cuda") else 0,
    log:
        log_path("train_hands.log"),
    benchmark:
        benchmark_path("train_hands.tsv")
    shell:
        "python -m sltrain train-hands --params {PARAMS_FILE:q} --hand-crops {params.crops_dir:q}"
        " --packed {params.packed:q} --samples {input.samples:q} --label-map {input.label_map:q}"
        " --out-dir {params.out_dir:q} --work-dir {params.work_dir:q} --no-progress > {log} 2>&1"


rule evaluate:
    """The trained model on val and test (the only stage that reads test): metrics, confusion, predictions."""
    input:
        model=data_path("train", "model.pt"),
        keypoints=data_path("features", "pose", "keypoints.npy"),
        index=data_path("features", "pose", "index.parquet"),
        samples=data_path("subset", "samples.parquet"),
        code=code_files("evaluate"),
    output:
        metrics=data_path("eval", "metrics.json"),
        val=report(directory(data_path("eval", "val")), patterns=["{name}.png"], caption="../report/confusion.rst",
                   category="Evaluation"),
        test=directory(data_path("eval", "test")),
    params:
        packed=lambda wildcards, input: os.path.dirname(input.keypoints),
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
        **stage_params(config, "evaluate"),
    log:
        log_path("evaluate.log"),
    benchmark:
        benchmark_path("evaluate.tsv")
    shell:
        "python -m sltrain evaluate --params {PARAMS_FILE:q} --model {input.model:q} --packed {params.packed:q}"
        " --samples {input.samples:q} --splits val test --out-dir {params.out_dir:q} > {log} 2>&1"


rule export:
    """The trained model -> OpenVINO IR + ONNX model repository with a model card, refused unless PyTorch, OpenVINO and ONNX agree on real val clips."""
    input:
        model=data_path("train", "model.pt"),
        keypoints=data_path("features", "pose", "keypoints.npy"),
        evaluation=data_path("eval", "metrics.json"),  # for the model card
        code=code_files("export"),
    output:
        repo=directory(data_path("export", "sign-recognizer")),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.repo),
        packed=lambda wildcards, input: os.path.dirname(input.keypoints),
        **stage_params(config, "export"),
    log:
        log_path("export.log"),
    benchmark:
        benchmark_path("export.tsv")
    shell:
        "python -m sltrain export {input.model:q} --params {PARAMS_FILE:q} --out {params.out_dir:q}"
        " --name sign-recognizer --version 1 --overwrite --parity-packed {params.packed:q}"
        " --eval-metrics {input.evaluation:q} > {log} 2>&1"
