module sleeper_forkjoin

go 1.19
