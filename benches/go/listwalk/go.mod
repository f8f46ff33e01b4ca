module listwalk

go 1.19
