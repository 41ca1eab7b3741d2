//go:build !linux

package main

// echoOff: elsewhere term.ReadPassword turns echo off itself, after the
// prompt is shown.
func echoOff(int) (restore func(), err error) { return func() {}, nil }
