"""Study pipelines. Each study is ``run(config, out_dir)``; the CLI only parses and calls it."""
