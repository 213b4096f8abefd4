"""`lensllm run`: config, jobs, results store, executors and the pipeline that drives them."""
