module loops30

go 1.19
