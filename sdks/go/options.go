package boxlite

/*
#include "bridge.h"
*/
import "C"

import "strings"

// BoxOption configures Create and GetOrCreate.
type BoxOption func(*boxConfig)

type boxConfig struct {
	name          string
	cpus          int
	memoryMiB     int
	diskGiB       int
	env           [][2]string
	workdir       string
	volumes       []volume
	ports         []Port
	networkOff    bool
	allowNet      []string
	autoRemove    bool
	entrypoint    []string
	entrypointSet bool
	cmd           []string
	cmdSet        bool
	secrets       []Secret
}

type volume struct {
	source, guest string
	readOnly      bool
}

// Protocol is a published port's transport.
type Protocol int

const (
	TCP Protocol = iota
	UDP
)

func (p Protocol) String() string {
	if p == UDP {
		return "udp"
	}
	return "tcp"
}

// Port publishes a guest port on the host. HostIP "" is 127.0.0.1 (boxlite publishes
// on loopback unless told otherwise); HostPort 0 is any free port.
type Port struct {
	HostIP    string
	HostPort  uint16
	GuestPort uint16
	Protocol  Protocol
}

// Secret is a value the box never sees: it sees Placeholder ("" is
// "<BOXLITE_SECRET:NAME>"), which the host replaces with Value only in HTTPS requests
// to Hosts.
type Secret struct {
	Name        string
	Value       string
	Placeholder string
	Hosts       []string
}

// WithName names the box (unique in the home).
func WithName(name string) BoxOption { return func(c *boxConfig) { c.name = name } }

// WithCPUs sets the number of virtual CPUs (1 or more).
func WithCPUs(n int) BoxOption { return func(c *boxConfig) { c.cpus = n } }

// WithMemory sets the memory in MiB.
func WithMemory(mib int) BoxOption { return func(c *boxConfig) { c.memoryMiB = mib } }

// WithDiskSize sets the size of the box's writable disk in GiB.
func WithDiskSize(gib int) BoxOption { return func(c *boxConfig) { c.diskGiB = gib } }

// WithEnv adds an environment variable of the box's commands.
func WithEnv(key, value string) BoxOption {
	return func(c *boxConfig) { c.env = append(c.env, [2]string{key, value}) }
}

// WithWorkdir sets the working directory of the box's commands (absolute).
func WithWorkdir(dir string) BoxOption { return func(c *boxConfig) { c.workdir = dir } }

// WithVolume mounts a volume at guestPath. source is a volume name (created on first
// use), "" for an anonymous volume, or the directory of a volume boxlite manages; any
// other host directory is refused by Create.
func WithVolume(source, guestPath string, readOnly bool) BoxOption {
	return func(c *boxConfig) { c.volumes = append(c.volumes, volume{source, guestPath, readOnly}) }
}

// WithPort publishes a guest port on the host.
func WithPort(p Port) BoxOption { return func(c *boxConfig) { c.ports = append(c.ports, p) } }

// WithNetworkDisabled gives the box no network at all.
func WithNetworkDisabled() BoxOption { return func(c *boxConfig) { c.networkOff = true } }

// WithAllowNet allows egress to these hosts only (names, *.suffix, addresses or CIDRs,
// optionally with :port).
func WithAllowNet(hosts ...string) BoxOption {
	return func(c *boxConfig) { c.allowNet = append(c.allowNet, hosts...) }
}

// WithAutoRemove removes the box when it stops.
func WithAutoRemove(on bool) BoxOption { return func(c *boxConfig) { c.autoRemove = on } }

// WithEntrypoint overrides the image's entrypoint (no arguments clears it).
func WithEntrypoint(args ...string) BoxOption {
	return func(c *boxConfig) { c.entrypoint, c.entrypointSet = args, true }
}

// WithCmd overrides the image's command.
func WithCmd(args ...string) BoxOption {
	return func(c *boxConfig) { c.cmd, c.cmdSet = args, true }
}

// WithSecret adds a secret (see Secret).
func WithSecret(s Secret) BoxOption { return func(c *boxConfig) { c.secrets = append(c.secrets, s) } }

// buildOptions makes the C options (the caller frees them). boxlite's setters remember
// a bad value and the create call refuses it, naming it; what C cannot carry (a NUL
// inside a string) is refused here.
func buildOptions(image string, opts []BoxOption) (*C.CBoxliteOptions, error) {
	var cfg boxConfig
	for _, o := range opts {
		o(&cfg)
	}
	if err := noNUL(image); err != nil {
		return nil, err
	}
	img := cstr(image)
	defer freeC(img)
	var e C.FFIError
	var o *C.CBoxliteOptions
	if code := C.boxlite_options_new(img, &o, &e); code != C.Ok {
		return nil, takeError(code, &e)
	}
	ok := false
	defer func() {
		if !ok {
			C.boxlite_options_free(o)
		}
	}()
	str := func(s string, set func(*C.char)) error {
		if err := noNUL(s); err != nil {
			return err
		}
		p := cstr(s)
		defer freeC(p)
		set(p)
		return nil
	}
	if cfg.name != "" {
		if err := str(cfg.name, func(p *C.char) { C.boxlite_options_set_name(o, p) }); err != nil {
			return nil, err
		}
	}
	if cfg.cpus != 0 {
		C.boxlite_options_set_cpus(o, C.int(clampInt(cfg.cpus)))
	}
	if cfg.memoryMiB != 0 {
		C.boxlite_options_set_memory(o, C.int(clampInt(cfg.memoryMiB)))
	}
	if cfg.diskGiB != 0 {
		C.boxlite_options_set_disk_size_gb(o, C.int(clampInt(cfg.diskGiB)))
	}
	if cfg.workdir != "" {
		if err := str(cfg.workdir, func(p *C.char) { C.boxlite_options_set_workdir(o, p) }); err != nil {
			return nil, err
		}
	}
	for _, kv := range cfg.env {
		if err := noNUL(kv[0], kv[1]); err != nil {
			return nil, err
		}
		k, v := cstr(kv[0]), cstr(kv[1])
		C.boxlite_options_add_env(o, k, v)
		freeC(k)
		freeC(v)
	}
	for _, vol := range cfg.volumes {
		if err := noNUL(vol.source, vol.guest); err != nil {
			return nil, err
		}
		s, g := optCstr(vol.source), cstr(vol.guest)
		C.boxlite_options_add_volume(o, s, g, cbool(vol.readOnly))
		freeC(s)
		freeC(g)
	}
	for _, p := range cfg.ports {
		if err := noNUL(p.HostIP); err != nil {
			return nil, err
		}
		ip := optCstr(p.HostIP)
		var proto C.enum_BoxlitePortProtocol = C.BoxlitePortProtocolTcp
		if p.Protocol == UDP {
			proto = C.BoxlitePortProtocolUdp
		}
		// A bad port is also remembered by the options: create refuses it with a message.
		C.boxlite_options_add_port(o, C.uint16_t(p.HostPort), C.uint16_t(p.GuestPort), proto, ip)
		freeC(ip)
	}
	if cfg.networkOff {
		C.boxlite_options_set_network_disabled(o)
	}
	for _, h := range cfg.allowNet {
		if err := str(h, func(p *C.char) { C.boxlite_options_add_network_allow(o, p) }); err != nil {
			return nil, err
		}
	}
	if cfg.autoRemove {
		C.boxlite_options_set_auto_remove(o, 1)
	}
	if cfg.entrypointSet {
		if err := noNUL(cfg.entrypoint...); err != nil {
			return nil, err
		}
		v := newStrv(cfg.entrypoint)
		C.boxlite_options_set_entrypoint(o, v.ptr(), C.int(len(cfg.entrypoint)))
		v.free()
	}
	if cfg.cmdSet {
		if err := noNUL(cfg.cmd...); err != nil {
			return nil, err
		}
		v := newStrv(cfg.cmd)
		C.boxlite_options_set_cmd(o, v.ptr(), C.int(len(cfg.cmd)))
		v.free()
	}
	for _, s := range cfg.secrets {
		if err := noNUL(append([]string{s.Name, s.Value, s.Placeholder}, s.Hosts...)...); err != nil {
			return nil, err
		}
		n, val, ph := cstr(s.Name), cstr(s.Value), optCstr(s.Placeholder)
		hosts := newStrv(s.Hosts)
		C.boxlite_options_add_secret(o, n, val, ph, hosts.ptr(), C.int(len(s.Hosts)))
		hosts.free()
		freeC(n)
		freeC(val)
		freeC(ph)
	}
	ok = true
	return o, nil
}

func noNUL(ss ...string) error {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return invalid("%q contains a NUL byte", s)
		}
	}
	return nil
}

func clampInt(n int) int {
	const maxC = 1<<31 - 1
	if n > maxC {
		return maxC
	}
	if n < -maxC {
		return -maxC
	}
	return n
}
