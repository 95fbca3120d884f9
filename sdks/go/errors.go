package boxlite

import "fmt"

// ErrorCode is boxlite's error code (the C ABI's BoxliteErrorCode).
type ErrorCode int

// The codes of boxlite's C ABI, with the same numbers.
const (
	CodeOK                ErrorCode = 0
	CodeInternal          ErrorCode = 1
	CodeNotFound          ErrorCode = 2
	CodeAlreadyExists     ErrorCode = 3
	CodeInvalidState      ErrorCode = 4
	CodeInvalidArgument   ErrorCode = 5
	CodeConfig            ErrorCode = 6
	CodeStorage           ErrorCode = 7
	CodeImage             ErrorCode = 8
	CodeNetwork           ErrorCode = 9
	CodeExecution         ErrorCode = 10
	CodeStopped           ErrorCode = 11
	CodeEngine            ErrorCode = 12
	CodeUnsupported       ErrorCode = 13
	CodeDatabase          ErrorCode = 14
	CodePortal            ErrorCode = 15
	CodeRPC               ErrorCode = 16
	CodeRPCTransport      ErrorCode = 17
	CodeMetadata          ErrorCode = 18
	CodeUnsupportedEngine ErrorCode = 19
	CodeResourceExhausted ErrorCode = 20
	CodeSessionReaped     ErrorCode = 21
)

var codeNames = map[ErrorCode]string{
	CodeOK:                "OK",
	CodeInternal:          "Internal",
	CodeNotFound:          "NotFound",
	CodeAlreadyExists:     "AlreadyExists",
	CodeInvalidState:      "InvalidState",
	CodeInvalidArgument:   "InvalidArgument",
	CodeConfig:            "Config",
	CodeStorage:           "Storage",
	CodeImage:             "Image",
	CodeNetwork:           "Network",
	CodeExecution:         "Execution",
	CodeStopped:           "Stopped",
	CodeEngine:            "Engine",
	CodeUnsupported:       "Unsupported",
	CodeDatabase:          "Database",
	CodePortal:            "Portal",
	CodeRPC:               "Rpc",
	CodeRPCTransport:      "RpcTransport",
	CodeMetadata:          "Metadata",
	CodeUnsupportedEngine: "UnsupportedEngine",
	CodeResourceExhausted: "ResourceExhausted",
	CodeSessionReaped:     "SessionReaped",
}

func (c ErrorCode) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("ErrorCode(%d)", int(c))
}

// Error is an error reported by boxlite: its code and its message (the library's whole
// error chain). Match a kind with errors.Is(err, boxlite.ErrNotFound) and friends, or
// take it apart with errors.As(err, &e).
type Error struct {
	Code    ErrorCode
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "boxlite: " + e.Code.String()
	}
	return "boxlite: " + e.Message + " (" + e.Code.String() + ")"
}

// Is reports whether target is the sentinel of e's code (an *Error with no message,
// such as ErrNotFound). ErrRuntimeClosed matches only itself, and is also an
// ErrInvalidState.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	if t == ErrRuntimeClosed {
		return e == ErrRuntimeClosed
	}
	return t.Message == "" && t.Code == e.Code
}

// ErrRuntimeClosed is returned by every call on a Runtime that was closed (or shut
// down), and by the calls still in flight when Close ran. It is an *Error of code
// CodeInvalidState, so errors.Is(err, ErrInvalidState) holds too.
var ErrRuntimeClosed = &Error{Code: CodeInvalidState, Message: "the runtime is closed"}

// Sentinels for errors.Is, one per code.
var (
	ErrInternal          = &Error{Code: CodeInternal}
	ErrNotFound          = &Error{Code: CodeNotFound}
	ErrAlreadyExists     = &Error{Code: CodeAlreadyExists}
	ErrInvalidState      = &Error{Code: CodeInvalidState}
	ErrInvalidArgument   = &Error{Code: CodeInvalidArgument}
	ErrConfig            = &Error{Code: CodeConfig}
	ErrStorage           = &Error{Code: CodeStorage}
	ErrImage             = &Error{Code: CodeImage}
	ErrNetwork           = &Error{Code: CodeNetwork}
	ErrExecution         = &Error{Code: CodeExecution}
	ErrStopped           = &Error{Code: CodeStopped}
	ErrEngine            = &Error{Code: CodeEngine}
	ErrUnsupported       = &Error{Code: CodeUnsupported}
	ErrDatabase          = &Error{Code: CodeDatabase}
	ErrPortal            = &Error{Code: CodePortal}
	ErrRPC               = &Error{Code: CodeRPC}
	ErrRPCTransport      = &Error{Code: CodeRPCTransport}
	ErrMetadata          = &Error{Code: CodeMetadata}
	ErrUnsupportedEngine = &Error{Code: CodeUnsupportedEngine}
	ErrResourceExhausted = &Error{Code: CodeResourceExhausted}
	ErrSessionReaped     = &Error{Code: CodeSessionReaped}
)

// invalid is an InvalidArgument error found on the Go side.
func invalid(format string, a ...any) error {
	return &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf(format, a...)}
}
