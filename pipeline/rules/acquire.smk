rule acquire:
    """Subset -> usable clips of one shard (download or local store, crop cleaning, trim, captions)."""
    input:
        samples=data_path("subset", "samples.parquet"),
        store=get_local_store,
        code=code_files("acquire"),
    output:
        clips=data_path("clips", "shard-{shard}", "clips.parquet"),
        ledger=data_path("clips", "shard-{shard}", "ledger.parquet"),
        report=data_path("clips", "shard-{shard}", "report.json"),
        videos=directory(data_path("clips", "shard-{shard}", "videos")),
    params:
        **stage_params(config, "acquire"),
        out_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output.clips)),
        cache_dir=data_path("cache", "sources"),
    resources:
        network=1,
    log:
        log_path("acquire/shard-{shard}.log"),
    benchmark:
        benchmark_path("acquire/shard-{shard}.tsv")
    shell:
        "python -m sldata acquire --params {PARAMS_FILE:q} --samples {input.samples:q} --shard {wildcards.shard}"
        " --out-dir {params.out_dir:q} --cache-dir {params.cache_dir:q} --no-progress > {log} 2>&1"


rule coverage:
    """All shards' clip tables -> coverage report (metric); fails below acquire.min_success_ratio."""
    input:
        clips=get_shard_files("clips", "clips.parquet"),
        code=code_files("coverage"),
    output:
        metrics=data_path("coverage", "coverage.json"),
        report=data_path("coverage", "coverage.txt"),
    params:
        **stage_params(config, "coverage"),
    log:
        log_path("coverage.log"),
    shell:
        "python -m sldata coverage --params {PARAMS_FILE:q} --clips {input.clips:q}"
        " --metrics {output.metrics:q} --report {output.report:q} > {log} 2>&1"
