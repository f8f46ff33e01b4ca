module sleeper_churn

go 1.19
