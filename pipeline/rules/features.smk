# Features beside the pose keypoints: RGB frames and hand crops (for RGB models) and the pose
# summary (a "look, don't read" report of the pose stage).
#
# `all` trains the pose model only, so frames and hand crops are built on request:
#   snakemake --cores 2 frames_all        # data/frames/shard-NNN/ for every shard
#   snakemake --cores 2 hand_crops_all    # data/hand_crops/shard-NNN/ (needs the pose shards)
# The pose summary is cheap and part of `all` (get_final_outputs in common.smk).
# Folders passed to the CLIs are derived from the declared files (shard_root in common.smk),
# so they can never disagree with them.


rule frames:
    """Usable clips of one shard -> RGB frames, sampled and resized, in one array (or JPEG Parquet) + index."""
    input:
        clips=data_path("clips", "shard-{shard}", "clips.parquet"),
        videos=data_path("clips", "shard-{shard}", "videos"),
        coverage=data_path("coverage", "coverage.json"),  # as pose: too few usable clips stop here
        code=code_files("frames"),
    output:
        frames=data_path("frames", "shard-{shard}", FRAMES_FILE),
        index=data_path("frames", "shard-{shard}", "index.parquet"),
    params:
        **stage_params(config, "frames"),
        clips_dir=lambda wildcards, input: shard_root(input.clips),
        out_dir=lambda wildcards, output: shard_root(output.index),
    threads: config["frames"]["workers"]
    log:
        log_path("frames/shard-{shard}.log"),
    benchmark:
        benchmark_path("frames/shard-{shard}.tsv")
    shell:
        "python -m sldata frames --params {PARAMS_FILE:q} --clips-dir {params.clips_dir:q} --shard {wildcards.shard}"
        " --out-dir {params.out_dir:q} --no-progress > {log} 2>&1"


rule frames_all:
    """Target: the frames of every shard (`snakemake --cores 2 frames_all`)."""
    input:
        get_shard_files("frames", "index.parquet"),


rule hand_crops:
    """Usable clips + pose shard of one shard -> both hands cropped at every keypoint frame + boxes + index."""
    input:
        clips=data_path("clips", "shard-{shard}", "clips.parquet"),
        videos=data_path("clips", "shard-{shard}", "videos"),
        pose=data_path("pose", "shard-{shard}.parquet"),
        code=code_files("hand_crops"),
    output:
        crops=data_path("hand_crops", "shard-{shard}", HAND_CROPS_FILE),
        boxes=data_path("hand_crops", "shard-{shard}", "boxes.npy"),
        index=data_path("hand_crops", "shard-{shard}", "index.parquet"),
    params:
        **stage_params(config, "hand_crops"),
        clips_dir=lambda wildcards, input: shard_root(input.clips),
        pose_dir=lambda wildcards, input: shard_root(input.pose),
        out_dir=lambda wildcards, output: shard_root(output.index),
    threads: config["hand_crops"]["workers"]
    log:
        log_path("hand_crops/shard-{shard}.log"),
    benchmark:
        benchmark_path("hand_crops/shard-{shard}.tsv")
    shell:
        "python -m sldata hand-crops --params {PARAMS_FILE:q} --clips-dir {params.clips_dir:q}"
        " --pose-dir {params.pose_dir:q} --shard {wildcards.shard} --out-dir {params.out_dir:q} --no-progress"
        " > {log} 2>&1"


rule hand_crops_all:
    """Target: the hand crops of every shard (`snakemake --cores 2 hand_crops_all`)."""
    input:
        get_shard_files("hand_crops", "index.parquet"),


rule pose_summary:
    """All pose shards + clip tables -> per-split pose summary (CSV, JSON metric, PNG)."""
    input:
        pose=get_shard_paths("pose", ".parquet"),
        clips=get_shard_files("clips", "clips.parquet"),
        code=code_files("pose_summary"),
    output:
        csv=data_path("pose_summary", "summary.csv"),
        metrics=data_path("pose_summary", "summary.json"),
        png=report(data_path("pose_summary", "summary.png"), caption="../report/pose_summary.rst", category="Pose"),
    params:
        **stage_params(config, "pose_summary"),
        pose_dir=lambda wildcards, input: shard_root(input.pose[0]),
        clips_dir=lambda wildcards, input: shard_root(input.clips[0]),
        out_dir=lambda wildcards, output: os.path.dirname(output.csv),
    log:
        log_path("pose_summary.log"),
    benchmark:
        benchmark_path("pose_summary.tsv")
    shell:
        "python -m sldata pose-summary --params {PARAMS_FILE:q} --pose-dir {params.pose_dir:q}"
        " --clips-dir {params.clips_dir:q} --out-dir {params.out_dir:q} > {log} 2>&1"
