module github.com/boxlite/boxlite/sdks/go

go 1.22
