module github.com/stepraft/stepraft

go 1.26
