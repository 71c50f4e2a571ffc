"""How a training run is launched and kept safe: the runner (training.py), loggers, launch checks, results,
checkpoint IO, run-folder locks, sweeps, the GAN DDP strategy and the config resolvers."""
