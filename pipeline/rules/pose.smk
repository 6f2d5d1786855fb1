rule pose:
    """Usable clips of one shard -> MediaPipe Holistic keypoints (one Parquet shard, resumable).

    A copy of each finished shard is kept in data/cache/pose (outside the outputs, which Snakemake
    deletes before a rerun): a rerun takes the rows of clips whose file and keypoint settings are
    unchanged and extracts only new or changed clips (see sldata/pose/extract.py).
    """
    input:
        clips=data_path("clips", "shard-{shard}", "clips.parquet"),
        videos=data_path("clips", "shard-{shard}", "videos"),
        coverage=data_path("coverage", "coverage.json"),
        code=code_files("pose"),
    output:
        pose=data_path("pose", "shard-{shard}.parquet"),
    params:
        **stage_params(config, "pose"),
        clips_dir=lambda wildcards, input: os.path.dirname(os.path.dirname(input.clips)),
        out_dir=lambda wildcards, output: os.path.dirname(output.pose),
        cache_dir=data_path("cache", "pose"),
    threads: config["pose"]["workers"]
    log:
        log_path("pose/shard-{shard}.log"),
    benchmark:
        benchmark_path("pose/shard-{shard}.tsv")
    shell:
        "python -m sldata pose --params {PARAMS_FILE:q} --clips-dir {params.clips_dir:q} --shard {wildcards.shard}"
        " --out-dir {params.out_dir:q} --cache-dir {params.cache_dir:q} --no-progress > {log} 2>&1"


rule pack_pose:
    """All pose shards -> one memory-mappable keypoint array + index for training (all splits)."""
    input:
        pose=get_shard_paths("pose", ".parquet"),
        samples=data_path("subset", "samples.parquet"),
        code=code_files("pack_pose"),
    output:
        keypoints=data_path("features", "pose", "keypoints.npy"),
        index=data_path("features", "pose", "index.parquet"),
        skeleton=data_path("features", "pose", "skeleton.json"),
    params:
        **stage_params(config, "pack_pose"),
        pose_dir=lambda wildcards, input: os.path.dirname(input.pose[0]),
        out_dir=lambda wildcards, output: os.path.dirname(output.keypoints),
    log:
        log_path("pack_pose.log"),
    benchmark:
        benchmark_path("pack_pose.tsv")
    shell:
        "python -m sldata pack-pose --params {PARAMS_FILE:q} --pose-dir {params.pose_dir:q}"
        " --samples {input.samples:q} --out-dir {params.out_dir:q} > {log} 2>&1"
